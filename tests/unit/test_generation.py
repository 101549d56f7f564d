"""The continuous-batching engine with the real SmolLM2: join, leave, cancel, per-request sampling, limits.

Ordering, not timing: each test asserts what happened between decode steps (``stats()["steps"]``) or which
stream finished first, never how long something took.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from services.config import default_model
from services.models import sources
from services.models.chat import ChatModel
from services.models.generation import BatchedEngine, Delta, EngineError, GenerationParams

GREEDY = GenerationParams(max_tokens=8, temperature=0.0)


@pytest.fixture(scope="module")
def chat(settings):
    # These tests check behaviour, not speed: one torch thread keeps them quick on a machine whose cores are
    # busy with other work (spinning OpenMP threads stall each step there; see docs/generation.md).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = ChatModel(sources.resolve(default_model("chat").source, settings.cache_dir), settings.cache_dir, "cpu",
                      max_batch_size=8).load()
    yield model
    model.close()
    torch.set_num_threads(threads)


def ask(chat: ChatModel, question: str) -> list[int]:
    return chat.prompt_ids([{"role": "user", "content": question}])


async def collect(chat: ChatModel, prompt_ids: list[int], params: GenerationParams) -> list[Delta]:
    return [delta async for delta in chat.engine.generate(prompt_ids, params)]


def text(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas)


def solo(chat: ChatModel, prompt_ids: list[int], params: GenerationParams) -> str:
    assert chat.engine.stats()["active"] == 0
    return text(list(chat.generate(prompt_ids, params)))


async def wait_until(chat: ChatModel, condition, steps: int = 20) -> None:
    """Wait (by decode steps, not by time) until ``condition(stats)`` holds or ``steps`` more steps have run."""
    limit = chat.engine.stats()["steps"] + steps
    while not condition(stats := chat.engine.stats()) and stats["steps"] <= limit:
        await asyncio.sleep(0.005)


async def test_a_request_that_arrives_mid_generation_joins_the_running_batch(chat):
    first_prompt, second_prompt = ask(chat, "Write a long story about a dragon."), ask(chat, "What is the capital of France?")
    first_params = GenerationParams(max_tokens=16, temperature=0.0)
    expected = solo(chat, first_prompt, first_params), solo(chat, second_prompt, GREEDY)

    first = chat.engine.generate(first_prompt, first_params)
    first_deltas = [await anext(first)]  # the first request is generating on its own
    assert chat.engine.stats()["active"] == 1
    second = asyncio.create_task(collect(chat, second_prompt, GREEDY))
    async for delta in first:
        first_deltas.append(delta)
        if chat.engine.stats()["active"] == 2:
            break
    else:
        pytest.fail("the second request never joined the batch while the first was generating")
    first_deltas += [delta async for delta in first]
    second_deltas = await second
    assert (text(first_deltas), text(second_deltas)) == expected
    assert "Paris" in text(second_deltas)
    assert first_deltas[-1].completion_tokens == 16


async def test_a_short_request_leaves_while_a_long_one_continues(chat):
    long_prompt, short_prompt = ask(chat, "Write a long story about a knight."), ask(chat, "Say hello.")
    order: list[str] = []

    async def run(name, prompt_ids, params):
        deltas = []
        async for delta in chat.engine.generate(prompt_ids, params):
            deltas.append(delta)
            if delta.finish_reason:
                order.append(name)
                steps_at_finish[name] = chat.engine.stats()["steps"]
        return deltas

    steps_at_finish: dict[str, int] = {}
    long_deltas, short_deltas = await asyncio.gather(
        run("long", long_prompt, GenerationParams(max_tokens=16, temperature=0.0)),
        run("short", short_prompt, GenerationParams(max_tokens=3, temperature=0.0)),
    )
    assert order == ["short", "long"]
    assert short_deltas[-1] == Delta(short_deltas[-1].text, "length", 3)
    assert long_deltas[-1].finish_reason == "length" and long_deltas[-1].completion_tokens == 16
    assert steps_at_finish["long"] - steps_at_finish["short"] >= 8  # the long one kept decoding after
    assert chat.engine.stats()["active"] == 0


@pytest.mark.parametrize("how", ["aclose", "cancel the task"])
async def test_closing_a_stream_frees_its_slot_within_one_decode_step(chat, how):
    stream = chat.engine.generate(ask(chat, "Write a long story about the sea."), GenerationParams(max_tokens=200))
    if how == "aclose":  # what contextlib.aclosing in the deployment does when the client goes away
        await anext(stream)
        assert chat.engine.stats()["active"] == 1
        steps = chat.engine.stats()["steps"]
        await stream.aclose()
    else:  # Serve cancels the task that iterates the stream
        received = asyncio.Event()

        async def consume():
            async for _ in stream:
                received.set()

        task = asyncio.create_task(consume())
        await received.wait()
        assert chat.engine.stats()["active"] == 1
        steps = chat.engine.stats()["steps"]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await wait_until(chat, lambda s: s["active"] == 0)
    stats = chat.engine.stats()
    assert stats["active"] == 0
    assert stats["steps"] - steps <= 1  # the step in flight when it was closed, at most


async def test_greedy_text_is_the_same_alone_and_batched_with_sampled_requests(chat):
    prompt = ask(chat, "What is the capital of France?")
    alone = solo(chat, prompt, GREEDY)
    others = [GenerationParams(max_tokens=8, temperature=1.0, top_p=0.95, seed=seed) for seed in (1, 2, 3)]
    results = await asyncio.gather(
        collect(chat, prompt, GREEDY),
        *(collect(chat, ask(chat, "Name a colour."), params) for params in others),
    )
    assert text(results[0]) == alone
    assert len({text(r) for r in results[1:]}) > 1  # the sampled neighbours really sampled


async def test_seeded_requests_reproduce_their_text(chat):
    prompt = ask(chat, "Tell me a short story.")
    params = [GenerationParams(max_tokens=8, temperature=1.0, top_p=0.9, seed=seed) for seed in (7, 8)]
    first = await asyncio.gather(*(collect(chat, prompt, p) for p in params))
    again = await asyncio.gather(*(collect(chat, prompt, p) for p in params))
    assert [text(d) for d in first] == [text(d) for d in again]
    assert text(first[0]) != text(first[1])  # same prompt, different seeds


async def test_exactly_max_tokens_are_generated(chat):
    deltas = await collect(chat, ask(chat, "Write a long story about a dragon and a knight."),
                           GenerationParams(max_tokens=5, temperature=0.0))
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].completion_tokens == 5
    assert all(d.finish_reason is None for d in deltas[:-1]) and len(deltas) <= 6
    assert len(chat.tokenizer.encode(text(deltas), add_special_tokens=False)) in range(4, 7)  # ~5 tokens re-encoded


async def test_text_stops_before_a_stop_string(chat):
    prompt = ask(chat, "Count from 1 to 10, separated by commas.")
    full = text(await collect(chat, prompt, GenerationParams(max_tokens=24, temperature=0.0)))
    assert "4, 5" in full
    for stop in ("5", "4, 5"):
        deltas = await collect(chat, prompt, GenerationParams(max_tokens=24, temperature=0.0, stop=(stop,)))
        assert deltas[-1].finish_reason == "stop"
        assert text(deltas) == full[: full.index(stop)]


async def test_eight_concurrent_streams_each_get_their_own_text(chat):
    questions = ["What is the capital of France?", "What is 2 plus 2?", "Name a fruit.", "Say hello.",
                 "What colour is the sky?", "Name a planet.", "What do bees make?", "Name an ocean."]
    prompts = [ask(chat, q) for q in questions]
    expected = [solo(chat, p, GREEDY) for p in prompts]
    seen_batch = 0

    async def watch():
        nonlocal seen_batch
        while True:
            seen_batch = max(seen_batch, chat.engine.stats()["last_batch_size"])
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(*(collect(chat, p, GREEDY) for p in prompts))
    watcher.cancel()
    assert [text(r) for r in results] == expected
    assert len(set(expected)) == 8
    assert all(r[-1].finish_reason in ("stop", "length") for r in results)
    assert seen_batch >= 4  # they shared decode steps


def test_a_stopped_engine_refuses_new_work(settings):
    model = ChatModel(sources.resolve(default_model("chat").source, settings.cache_dir), settings.cache_dir, "cpu").load()
    model.close()
    with pytest.raises(EngineError):
        list(model.generate(ask(model, "Hi"), GREEDY))


def test_prompts_outside_the_vocabulary_are_rejected_before_they_reach_the_batch(chat):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        list(chat.generate([1, 2, 10**9], GREEDY))
    assert chat.engine.fatal_error is None


async def test_a_request_waits_when_the_batch_token_budget_is_spent(chat):
    prompts = [ask(chat, "Name a fruit."), ask(chat, "Name a planet.")]
    expected = [solo(chat, p, GREEDY) for p in prompts]
    longest = max(len(p) for p in prompts) + GREEDY.max_tokens
    engine = BatchedEngine(chat.torch_model, chat.tokenizer, chat.device, max_batch_tokens=2 * longest - 1)
    engine.start()
    active: list[int] = []

    async def run(prompt_ids):
        deltas = []
        async for delta in engine.generate(prompt_ids, GREEDY):
            active.append(engine.stats()["active"])
            deltas.append(delta)
        return deltas

    try:
        results = await asyncio.gather(*(run(p) for p in prompts))
    finally:
        engine.stop()
    assert [text(r) for r in results] == expected
    assert max(active) == 1  # the second was admitted only after the first left
