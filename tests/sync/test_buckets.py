import pytest
import torch

from medix_ray.sync.buckets import ParamSpec, bucket_nbytes, checksum, pack, plan_buckets, specs_of, unpack


def _named():
    g = torch.Generator().manual_seed(0)
    return [
        ("a.weight", torch.randn(4, 8, generator=g)),
        ("b.bias", torch.randn(8, generator=g)),
        ("c.weight", torch.randn(64, 16, generator=g)),
        ("d.weight", torch.randn(3, generator=g)),
    ]


def test_plan_keeps_order_and_respects_the_bucket_size():
    specs = specs_of(_named(), torch.bfloat16)
    assert [s.nbytes for s in specs] == [64, 16, 2048, 6]
    buckets = plan_buckets(specs, bucket_bytes=100)
    # a and b fit together (80 bytes); c is larger than a bucket and travels alone; d follows.
    assert [[s.name for s in b] for b in buckets] == [["a.weight", "b.bias"], ["c.weight"], ["d.weight"]]
    assert [s for b in buckets for s in b] == specs
    assert sum(bucket_nbytes(b) for b in buckets) == sum(s.nbytes for s in specs)


def test_pack_unpack_round_trips_in_the_wire_dtype():
    named = _named()
    specs = specs_of(named, torch.bfloat16)
    for bucket in plan_buckets(specs, bucket_bytes=128):
        tensors = [dict(named)[s.name] for s in bucket]
        flat = pack(bucket, tensors)
        assert flat.dtype == torch.uint8 and flat.numel() == bucket_nbytes(bucket)
        for (name, got), want in zip(unpack(bucket, flat), tensors, strict=True):
            assert got.dtype == torch.bfloat16
            assert torch.equal(got, want.to(torch.bfloat16)), name


def test_pack_rejects_a_shape_that_does_not_match_the_plan():
    spec = ParamSpec("w", "float32", (2, 2))
    with pytest.raises(ValueError, match=r"parameter w: shape \(4,\) does not match"):
        pack([spec], [torch.zeros(4)])


def test_unknown_dtype_is_named():
    with pytest.raises(ValueError, match="parameter w: unknown dtype 'float99'"):
        _ = ParamSpec("w", "float99", (1,)).nbytes


def test_checksum_sees_a_single_flipped_bit():
    flat = pack([ParamSpec("w", "float32", (16,))], [torch.arange(16.0)])
    before = checksum([flat])
    flat[5] ^= 1
    assert checksum([flat]) != before
    flat[5] ^= 1
    assert checksum([flat]) == before
