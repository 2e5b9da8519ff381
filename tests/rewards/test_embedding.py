import numpy as np
import pytest

from medix_ray.rewards.embedding import EmbeddingSimilarity, SentenceTransformerEmbedder, similarity_score


def test_similarity_modes():
    assert similarity_score(0.8, "threshold", 0.8) == 1.0
    assert similarity_score(0.79, "threshold", 0.8) == 0.0
    assert similarity_score(0.42, "continuous", 0.8) == pytest.approx(0.42)
    assert similarity_score(-0.3, "continuous", 0.8) == 0.0
    with pytest.raises(ValueError, match="unknown embedding mode"):
        similarity_score(0.5, "cosine", 0.8)


def test_reference_embeddings_are_cached_across_calls(fake_embedder):
    sim = EmbeddingSimilarity(fake_embedder)
    sim.cosines(["a b", "a b", "c"], ["ref", "ref", "ref"])
    assert sim.encoded_texts == 3  # "a b", "c", "ref"
    sim.cosines(["d"], ["ref"])
    assert fake_embedder.calls[-1] == ["d"] and sim.encoded_texts == 4


def test_length_mismatch_is_an_error(fake_embedder):
    with pytest.raises(ValueError, match="2 answers but 1 references"):
        EmbeddingSimilarity(fake_embedder).cosines(["a", "b"], ["r"])


@pytest.fixture(scope="module")
def minilm():
    return SentenceTransformerEmbedder("all-minilm-l6-v2")


@pytest.mark.slow
def test_minilm_ranks_paraphrases_above_unrelated_answers(minilm):
    sim = EmbeddingSimilarity(minilm)
    cos = sim.cosines(["Heart attack", "Fracture of the femur", "Myocardial infarction"], ["Myocardial infarction"] * 3)
    assert cos[2] == pytest.approx(1.0, abs=1e-5)
    assert cos[0] > cos[1] + 0.2
    vectors = minilm.encode(["a", "b"])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_reference_cache_is_bounded_by_bytes_not_count(fake_embedder):
    """Long references cost their bytes: a 1 MiB budget holds a few hundred 64-dim vectors, whatever the text size."""
    sim = EmbeddingSimilarity(fake_embedder, cache_bytes=2**20)
    refs = [f"reference {k} " + "x" * 30_000 for k in range(2000)]
    for lo in range(0, len(refs), 100):
        sim.cosines(["answer"] * 100, refs[lo : lo + 100])
    assert sim.cache.bytes <= 2**20
    assert 0 < len(sim.cache) < 2000 and sim.cache.evictions == 2000 - len(sim.cache)
    # The newest references are the ones kept: asking for the last again encodes only the answer.
    before = sim.encoded_texts
    sim.cosines(["answer"], [refs[-1]])
    assert sim.encoded_texts == before + 1


def test_cached_vectors_do_not_pin_their_batch(fake_embedder):
    sim = EmbeddingSimilarity(fake_embedder)
    sim.cosines(["a", "b"], ["r1", "r2"])
    (vector,) = (sim.cache.get(sim._key("r1")),)
    assert vector.base is None  # an owned copy, not a view into the encoded batch
