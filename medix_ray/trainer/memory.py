"""Peak memory of the whole run: the summed resident memory of this process tree and Ray's.

A background thread samples every `interval_s` the PSS (or RSS where PSS is unreadable) of every
process of the current user, and keeps the peak; `medix-ray train` reports it at the end.
"""

from __future__ import annotations

import os
import threading

import psutil


def user_memory_bytes() -> int:
    """Returns the summed PSS of the current user's processes (all Ray workers and vLLM engines)."""
    uid = os.getuid()
    total = 0
    for proc in psutil.process_iter(["uids"]):
        try:
            if proc.info["uids"] is None or proc.info["uids"].real != uid:
                continue
            try:
                total += proc.memory_full_info().pss
            except (psutil.AccessDenied, AttributeError):
                total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return total


class PeakMemory:
    def __init__(self, interval_s: float = 2.0):
        self.interval_s = interval_s
        self.baseline = user_memory_bytes()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="medix-peak-memory", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, user_memory_bytes())

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def peak_gib(self) -> float:
        return self.peak / 2**30
