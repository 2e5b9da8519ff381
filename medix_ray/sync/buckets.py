"""How weights travel: parameters in a fixed order, packed into byte buckets, with a checksum.

Both ends compute the same bucket plan from the same metadata (names, dtypes, shapes), so only the
metadata crosses the control plane and only raw bytes cross the collective:

    specs = [ParamSpec("model.embed_tokens.weight", "bfloat16", [49152, 576]), ...]
    for bucket in plan_buckets(specs, bucket_bytes=64 << 20):
        flat = pack(bucket, tensors)          # sender: one uint8 buffer per bucket
        ...broadcast flat...
        named = unpack(bucket, flat)          # receiver: views into the buffer, in order

A bucket holds whole tensors; a tensor larger than the bucket size gets a bucket of its own.

`bucket_digest(flat)` is the integrity check of one bucket: two sums modulo the prime 2^31 - 1
over the buffer read as int32 words (plain, and weighted by each word's position), computed with
torch ops on the buffer's own device, so on a GPU it needs no host copy of the bucket. It detects
corruption (any single changed word, any flipped bit; two changed words unless their position
difference is a multiple of 2^31 - 1, i.e. beyond 8 GiB), not an adversary: it is not a
cryptographic hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ParamSpec:
    name: str
    dtype: str  # torch dtype name, e.g. "bfloat16"
    shape: tuple[int, ...]

    @property
    def torch_dtype(self) -> torch.dtype:
        dtype = getattr(torch, self.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"parameter {self.name}: unknown dtype {self.dtype!r}")
        return dtype

    @property
    def nbytes(self) -> int:
        count = 1
        for d in self.shape:
            count *= int(d)
        return count * torch.empty((), dtype=self.torch_dtype).element_size()


def specs_of(named: Iterable[tuple[str, torch.Tensor]], dtype: torch.dtype | None = None) -> list[ParamSpec]:
    """Returns the specs of named tensors, as they will be sent (cast to `dtype` when given)."""
    return [ParamSpec(n, str(dtype or t.dtype).removeprefix("torch."), tuple(t.shape)) for n, t in named]


def plan_buckets(specs: Sequence[ParamSpec], bucket_bytes: int) -> list[list[ParamSpec]]:
    """Returns consecutive groups of specs whose bytes stay within `bucket_bytes` (order kept)."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket size must be positive; got {bucket_bytes} bytes")
    buckets: list[list[ParamSpec]] = []
    current: list[ParamSpec] = []
    size = 0
    for spec in specs:
        if current and size + spec.nbytes > bucket_bytes:
            buckets.append(current)
            current, size = [], 0
        current.append(spec)
        size += spec.nbytes
    if current:
        buckets.append(current)
    return buckets


def bucket_nbytes(bucket: Sequence[ParamSpec]) -> int:
    return sum(s.nbytes for s in bucket)


def pack(bucket: Sequence[ParamSpec], tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Returns one contiguous uint8 buffer holding the bucket's tensors, cast to their spec dtype."""
    if len(bucket) != len(tensors):
        raise ValueError(f"bucket has {len(bucket)} specs but {len(tensors)} tensors were given")
    flat = torch.empty(bucket_nbytes(bucket), dtype=torch.uint8, device=tensors[0].device if tensors else "cpu")
    offset = 0
    for spec, t in zip(bucket, tensors, strict=True):
        if tuple(t.shape) != tuple(spec.shape):
            raise ValueError(f"parameter {spec.name}: shape {tuple(t.shape)} does not match the plan's {spec.shape}")
        data = t.detach().to(spec.torch_dtype).contiguous().reshape(-1).view(torch.uint8)
        flat[offset : offset + data.numel()].copy_(data)
        offset += data.numel()
    return flat


def unpack(bucket: Sequence[ParamSpec], flat: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Returns (name, tensor) views into a received bucket buffer, in plan order."""
    if flat.numel() != bucket_nbytes(bucket):
        raise ValueError(f"bucket buffer holds {flat.numel()} bytes; the plan expects {bucket_nbytes(bucket)}")
    out = []
    offset = 0
    for spec in bucket:
        n = spec.nbytes
        out.append((spec.name, flat[offset : offset + n].view(spec.torch_dtype).reshape(spec.shape)))
        offset += n
    return out


DIGEST_MODULUS = 2**31 - 1
_ROW = 4096  # int32 words per row: a row's position-weighted sum stays below 2^55 (no int64 overflow)
_ROWS_PER_STEP = 256  # rows reduced at once: 4 MiB of the bucket, 8 MiB of int64 temporaries


def bucket_digest(flat: torch.Tensor) -> torch.Tensor:
    """Returns the digest of a uint8 buffer: an int64 tensor [sum, position-weighted sum], on its device.

    Word i (the buffer read as little-endian int32, the last 1-3 bytes as one more word) adds w_i
    to the first sum and (i + 1) * w_i to the second, both modulo 2^31 - 1. The ops are int64
    sums that cannot overflow, so the result is exact and the same on every device and run.

        >>> flat = torch.arange(8, dtype=torch.uint8)
        >>> bucket_digest(flat).tolist()      # words 0x03020100 and 0x07060504
        [168297988, 286133000]
    """
    if flat.dtype != torch.uint8 or flat.dim() != 1:
        raise ValueError(f"bucket digest needs a 1-D uint8 buffer; got {flat.dtype} of shape {tuple(flat.shape)}")
    if flat.storage_offset() % 4:
        flat = flat.clone()  # int32 views need 4-byte alignment
    device = flat.device
    n_words = flat.numel() // 4
    words = flat[: n_words * 4].view(torch.int32)
    full_rows = n_words // _ROW
    weights = torch.arange(1, _ROW + 1, dtype=torch.int64, device=device)
    plain, weighted = [], []
    for r0 in range(0, full_rows, _ROWS_PER_STEP):
        r1 = min(r0 + _ROWS_PER_STEP, full_rows)
        x = words[r0 * _ROW : r1 * _ROW].view(r1 - r0, _ROW).to(torch.int64)
        plain.append(x.sum(dim=1))
        weighted.append(x.mul_(weights).sum(dim=1))
    rest, tail = words[full_rows * _ROW :], flat[n_words * 4 :]
    if rest.numel() or tail.numel():  # the last, partial row (zero-padded)
        last = torch.zeros(_ROW, dtype=torch.int64, device=device)
        last[: rest.numel()] = rest.to(torch.int64)
        if tail.numel():
            shifts = torch.tensor([1, 1 << 8, 1 << 16], dtype=torch.int64, device=device)[: tail.numel()]
            last[rest.numel()] = (tail.to(torch.int64) * shifts).sum()
        plain.append(last.sum().reshape(1))
        weighted.append((last * weights).sum().reshape(1))
    if not plain:
        return torch.zeros(2, dtype=torch.int64, device=device)
    m = DIGEST_MODULUS
    a = torch.cat(plain) % m
    b = torch.cat(weighted) % m
    offsets = torch.arange(a.numel(), dtype=torch.int64, device=device) * _ROW % m  # row r starts at word r * ROW
    return torch.stack([a.sum() % m, (b.sum() + (offsets * a % m).sum()) % m])


def push_digest(digests: Iterable[torch.Tensor]) -> str:
    """Returns one hex string for a whole push from its per-bucket digests, in order (one host copy)."""
    digests = list(digests)
    h = hashlib.blake2b(digest_size=16)
    if digests:
        h.update(torch.stack(digests).cpu().numpy().tobytes())
    return h.hexdigest()
