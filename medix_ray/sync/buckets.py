"""How weights travel: parameters in a fixed order, packed into byte buckets, with a checksum.

Both ends compute the same bucket plan from the same metadata (names, dtypes, shapes), so only the
metadata crosses the control plane and only raw bytes cross the collective:

    specs = [ParamSpec("model.embed_tokens.weight", "bfloat16", [49152, 576]), ...]
    for bucket in plan_buckets(specs, bucket_bytes=64 << 20):
        flat = pack(bucket, tensors)          # sender: one uint8 buffer per bucket
        ...broadcast flat...
        named = unpack(bucket, flat)          # receiver: views into the buffer, in order

A bucket holds whole tensors; a tensor larger than the bucket size gets a bucket of its own.
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


def checksum(buffers: Iterable[torch.Tensor]) -> str:
    """Returns a BLAKE2b digest of the buffers' bytes, in order (the sync checksum mode)."""
    h = hashlib.blake2b(digest_size=16)
    for buf in buffers:
        h.update(memoryview(buf.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()
