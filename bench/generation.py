"""Generation in this process, no HTTP: the naive one-stream loop against the batching engine.

    python -m bench.generation [--streams 8] [--tokens 64] [--repeats 2] [--device cpu]

Every stream generates exactly ``--tokens`` tokens (EOS is ignored, so streams do not finish early and
the batch stays full), greedy, from distinct prompts. Rows:

- naive loop: the sampling loop raydio ran before the engine, one stream at a time;
- engine, 1 stream / N streams: ``BatchedEngine`` with that many concurrent ``generate`` calls.

Total tokens/s is all tokens over the wall time of a round; TTFT is from submitting a stream to its first
delta. ``run()`` returns the rows for ``make bench``; ``main()`` prints them as a table.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field

import torch

from services.config import default_model, get_settings
from services.models import sources
from services.models.chat import ChatModel
from services.models.generation import BatchedEngine, GenerationParams

PROMPTS = [
    "Tell me a story about a dragon.",
    "Explain how a bicycle works.",
    "Write a poem about the sea.",
    "What should I cook for dinner tonight?",
    "Describe the city of Paris.",
    "Why is the sky blue?",
    "Give me three tips for learning to program.",
    "What is the history of the printing press?",
]


@dataclass
class Row:
    name: str
    streams: int
    tokens: int = 0
    seconds: float = 0.0
    ttft_s: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")

    def ttft(self, q: float) -> float:
        return _percentile(self.ttft_s, q)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


@torch.inference_mode()
def naive_stream(model, prompt_ids: list[int], max_tokens: int, row: Row) -> None:
    """The loop the chat model ran before the engine: batch 1, greedy, one forward per token over its own cache."""
    started = time.perf_counter()
    input_ids, cache = torch.tensor([prompt_ids], device=model.device), None
    for i in range(max_tokens):
        out = model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1)
        cache = out.cache
        token = int(out.logits[0, -1].argmax())
        if i == 0:
            row.ttft_s.append(time.perf_counter() - started)
        input_ids = torch.tensor([[token]], device=model.device)
    row.tokens += max_tokens


async def _engine_round(engine: BatchedEngine, prompts: list[list[int]], params: GenerationParams, row: Row) -> None:
    async def one(prompt_ids: list[int]) -> None:
        started = time.perf_counter()
        first = True
        async for delta in engine.generate(prompt_ids, params):
            if first:
                row.ttft_s.append(time.perf_counter() - started)
                first = False
            if delta.finish_reason:
                row.tokens += delta.completion_tokens

    started = time.perf_counter()
    await asyncio.gather(*(one(p) for p in prompts))
    row.seconds += time.perf_counter() - started


def run(streams: int = 8, tokens: int = 64, repeats: int = 2, device: str = "cpu",
        max_batch_size: int = 16) -> list[Row]:
    """Measure the naive loop, the engine with one stream and the engine with ``streams`` concurrent streams."""
    cache_dir = get_settings().cache_dir
    source = sources.resolve(default_model("chat").source, cache_dir)
    chat = ChatModel(source, cache_dir, device).load(start_engine=False)  # ours ignores EOS
    prompts = [chat.prompt_ids([{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]) for i in range(streams)]
    engine = BatchedEngine(chat.torch_model, chat.tokenizer, chat.device, max_batch_size, eos_token_ids=set())
    engine.start()
    params = GenerationParams(max_tokens=tokens, temperature=0.0)
    try:
        asyncio.run(_engine_round(engine, prompts[:1], GenerationParams(max_tokens=4, temperature=0.0), Row("", 1)))
        naive, one, many = Row("naive loop, 1 stream", 1), Row("engine, 1 stream", 1), Row(f"engine, {streams} streams", streams)
        for r in range(repeats):
            started = time.perf_counter()
            naive_stream(chat.torch_model, prompts[r % streams], tokens, naive)
            naive.seconds += time.perf_counter() - started
            asyncio.run(_engine_round(engine, [prompts[r % streams]], params, one))
            asyncio.run(_engine_round(engine, prompts, params, many))
    finally:
        engine.stop()
    return [naive, one, many]


def table(rows: list[Row]) -> str:
    one = next((r for r in rows if r.name.startswith("engine") and r.streams == 1), None)
    lines = ["| what | streams | tokens | total tokens/s | TTFT p50 s | TTFT p95 s | ÷ engine, 1 stream |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r.tokens_per_s / one.tokens_per_s:.2f}" if one and one.tokens_per_s else "—"
        lines.append(f"| {r.name} | {r.streams} | {r.tokens} | {r.tokens_per_s:.1f} | {r.ttft(50):.2f} | "
                     f"{r.ttft(95):.2f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args.streams, args.tokens, args.repeats, args.device, args.max_batch_size)
    print(f"torch threads: {torch.get_num_threads()}, device: {args.device}, {args.tokens} tokens per stream, "
          f"{args.repeats} round(s)")
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
