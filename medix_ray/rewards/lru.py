"""An LRU map bounded by the bytes it holds, not by its entry count.

The reward caches (judge verdicts, reference embeddings) hold entries of very different sizes: a
count bound of 100k entries of up to 32 KiB each is 3 GiB. Here every entry is charged its
estimated size (key, value and the map's own overhead) and the least recently used entries are
dropped once the total passes `max_bytes`.

    >>> cache = ByteLRU(max_bytes=1_000, sizeof=lambda key, value: 400)
    >>> for k in "abc":
    ...     cache.put(k, k.upper())
    >>> list(cache.keys()), cache.bytes, cache.evictions
    (['b', 'c'], 800, 1)
    >>> cache.get("a") is None, cache.get("b")
    (True, 'B')
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# What an OrderedDict entry costs beyond its key and value objects (hash slot + linked-list node).
ENTRY_OVERHEAD = 100


def default_sizeof(key: object, value: object) -> int:
    """Returns the bytes an entry holds: its key and value objects (numpy arrays by their buffer) and overhead."""
    nbytes = getattr(value, "nbytes", None)
    value_bytes = sys.getsizeof(value) + (int(nbytes) if nbytes is not None else 0)
    return sys.getsizeof(key) + value_bytes + ENTRY_OVERHEAD


class ByteLRU(Generic[K, V]):
    """A thread-safe LRU map holding at most `max_bytes` (an entry larger than that is not kept)."""

    def __init__(self, max_bytes: int, sizeof: Callable[[K, V], int] = default_sizeof):
        if max_bytes < 0:
            raise ValueError(f"cache budget must be >= 0 bytes; got {max_bytes}")
        self.max_bytes = max_bytes
        self.sizeof = sizeof
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: K) -> bool:
        return key in self._items

    def keys(self) -> Iterator[K]:
        return iter(list(self._items))

    def get(self, key: K) -> V | None:
        """Returns the value (and marks it recently used), or None; counts the hit or miss."""
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: K, value: V) -> None:
        """Stores the value, then drops least recently used entries until the total fits the budget."""
        size = self.sizeof(key, value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            if size > self.max_bytes:
                return
            self._items[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self.bytes -= dropped
                self.evictions += 1
