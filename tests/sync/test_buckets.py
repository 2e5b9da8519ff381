import pytest
import torch

from medix_ray.sync.buckets import (
    DIGEST_MODULUS,
    ParamSpec,
    bucket_digest,
    bucket_nbytes,
    pack,
    plan_buckets,
    push_digest,
    specs_of,
    unpack,
)


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


def _reference_digest(data: bytes) -> list[int]:
    """The digest's definition, word by word in plain Python (little-endian int32 words, the 1-3 tail
    bytes as one more word): [sum w_i, sum (i + 1) w_i], both mod 2^31 - 1."""
    words = [int.from_bytes(data[i : i + 4], "little", signed=True) for i in range(0, len(data) - len(data) % 4, 4)]
    if len(data) % 4:
        words.append(int.from_bytes(data[len(data) - len(data) % 4 :], "little"))
    m = DIGEST_MODULUS
    return [sum(words) % m, sum((i + 1) * w for i, w in enumerate(words)) % m]


@pytest.mark.parametrize("nbytes", [0, 3, 8, 4096 * 4, 4096 * 4 * 3 + 4 * 17 + 2, 4096 * 4 * 300 + 1])
def test_bucket_digest_follows_its_definition(nbytes):
    # Lengths cover: empty, tail bytes only, one partial row, one full row, full rows + a partial row + a
    # tail, and more rows than one reduction step holds.
    g = torch.Generator().manual_seed(nbytes)
    flat = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, generator=g)
    assert bucket_digest(flat).tolist() == _reference_digest(bytes(flat.tolist()))


def test_bucket_digest_sees_every_single_bit_flip_and_a_swap_of_words():
    flat = pack([ParamSpec("w", "float32", (16,))], [torch.arange(16.0)])  # 64 bytes
    before = bucket_digest(flat)
    seen = set()
    for byte in range(flat.numel()):
        for bit in range(8):
            flat[byte] ^= 1 << bit
            seen.add(tuple(bucket_digest(flat).tolist()))
            flat[byte] ^= 1 << bit
    assert len(seen) == 64 * 8 and tuple(before.tolist()) not in seen
    assert torch.equal(bucket_digest(flat), before)
    words = flat.view(torch.int32).clone()
    words[[2, 9]] = words[[9, 2]]  # the same words in another order: the plain sum agrees, the weighted one not
    swapped = bucket_digest(words.view(torch.uint8))
    assert swapped[0] == before[0] and swapped[1] != before[1]


def test_bucket_digest_of_an_unaligned_view_equals_that_of_a_copy():
    flat = torch.randint(0, 256, (1027,), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    view = flat[1:]
    assert view.storage_offset() % 4
    assert torch.equal(bucket_digest(view), bucket_digest(view.clone()))


def test_bucket_digest_rejects_a_buffer_that_is_not_flat_bytes():
    with pytest.raises(ValueError, match="1-D uint8 buffer; got torch.float32"):
        bucket_digest(torch.zeros(4))


def test_push_digest_depends_on_every_bucket_and_their_order():
    a, b = bucket_digest(torch.arange(8, dtype=torch.uint8)), bucket_digest(torch.arange(1, 9, dtype=torch.uint8))
    assert push_digest([a, b]) == push_digest([a.clone(), b.clone()])
    assert len({push_digest([a, b]), push_digest([b, a]), push_digest([a]), push_digest([])}) == 4
