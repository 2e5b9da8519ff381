"""Embedding similarity between an answer and its reference.

The reference encodes [answer, reference] with MedEmbed-large, one pair at a time, and scores
cosine >= 0.8 as 1, else 0. Here texts are encoded in batches, each distinct text once per
batch, reference embeddings are cached across calls (the n responses of a group share one
reference; the cache is an LRU bounded by bytes, keyed by a digest of the text), and two modes exist:

- `threshold` (the paper): 1.0 if cosine >= threshold, else 0.0;
- `continuous`: the cosine clipped to [0, 1].
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from medix_ray.rewards.lru import ByteLRU

logger = logging.getLogger(__name__)


class Similarity(Protocol):
    async def acosines(self, answers: Sequence[str], references: Sequence[str]) -> np.ndarray:
        """Returns the cosine similarity of each (answer, reference) pair, shape [N]."""
        ...


class Embedder(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Returns L2-normalised embeddings, one row per text."""
        ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model (an offline name, a local folder or a hub id), L2-normalised."""

    def __init__(self, model: str = "all-minilm-l6-v2", device: str | None = None, batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        from medix_ray.models import resolve_model

        self.name = model
        self.batch_size = batch_size
        self.model = SentenceTransformer(resolve_model(model), device=device)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        ).astype(np.float32)


def similarity_score(cosine: float, mode: str, threshold: float) -> float:
    """Returns the embedding reward of one cosine similarity."""
    if mode == "threshold":
        return 1.0 if cosine >= threshold else 0.0
    if mode == "continuous":
        return float(min(1.0, max(0.0, cosine)))
    raise ValueError(f"unknown embedding mode {mode!r}; expected threshold or continuous")


class EmbeddingSimilarity:
    """Cosine similarities of (answer, reference) pairs, batched, with a reference-embedding cache.

    `cache_bytes` bounds the cache (vectors, keys and overhead); a 384-dim float32 vector costs about 1.8 KB.
    """

    def __init__(self, embedder: Embedder, cache_bytes: int = 256 * 2**20):
        self.embedder = embedder
        self.cache = ByteLRU[bytes, np.ndarray](cache_bytes)
        self.encoded_texts = 0  # how many texts went through the model (for benchmarks and tests)

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    async def acosines(self, answers: Sequence[str], references: Sequence[str]) -> np.ndarray:
        """Returns cosines(...) computed in a worker thread, so the event loop keeps serving judge calls."""
        import asyncio

        return await asyncio.to_thread(self.cosines, answers, references)

    def cosines(self, answers: Sequence[str], references: Sequence[str]) -> np.ndarray:
        """Returns the cosine similarity of each (answer, reference) pair, shape [N]."""
        if len(answers) != len(references):
            raise ValueError(f"{len(answers)} answers but {len(references)} references")
        if not answers:
            return np.zeros(0, dtype=np.float32)
        ref_vectors: dict[str, np.ndarray] = {}
        for r in dict.fromkeys(references):
            cached = self.cache.get(self._key(r))
            if cached is not None:
                ref_vectors[r] = cached
        unique_answers = list(dict.fromkeys(answers))
        answer_set = set(unique_answers)
        missing_refs = [r for r in dict.fromkeys(references) if r not in ref_vectors]
        to_encode = unique_answers + [r for r in missing_refs if r not in answer_set]
        vectors = self.embedder.encode(to_encode)
        self.encoded_texts += len(to_encode)
        encoded = dict(zip(to_encode, vectors, strict=True))
        for r in missing_refs:
            ref_vectors[r] = encoded[r]
            # A copy: a row view would keep the whole batch's matrix alive behind one row's accounted bytes.
            self.cache.put(self._key(r), np.array(encoded[r], copy=True))
        answer_vectors = np.stack([encoded[a] for a in answers])
        return np.einsum("ij,ij->i", answer_vectors, np.stack([ref_vectors[r] for r in references]))
