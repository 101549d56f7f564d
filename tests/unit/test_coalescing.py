"""Concurrent embedding requests share handle calls: the coalescer on its own, then through the typed client over the
real embedder deployment (each request keeps its own answer, its own error and its own trace)."""

from __future__ import annotations

import asyncio

import pytest

from services.config import LimitsArgs
from services.core.coalescing import Coalescer
from services.deployments.embedder import EmbedderDeployment
from services.errors import InputTooLarge, ModelUnavailable
from tests.unit.conftest import CATALOGUE, LocalHandle, instantiate, local_core

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Replica:
    """A stand-in model replica: answers ``item * 10`` per item, after ``release`` is set; records each call."""

    def __init__(self) -> None:
        self.calls: list[list] = []
        self.release = asyncio.Event()
        self.cancelled = 0

    async def send(self, items: list) -> list:
        self.calls.append(list(items))
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if "broken" in items:
            raise RuntimeError("the whole call failed")
        return [ValueError(f"bad {item}") if isinstance(item, str) else item * 10 for item in items]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_lone_request_leaves_at_once_and_alone():
    replica = Replica()
    replica.release.set()
    coalescer = Coalescer(replica.send, in_flight=2, max_inputs=8)
    assert await coalescer.submit(1) == 10
    assert replica.calls == [[1]]


async def test_requests_that_arrive_while_every_call_is_out_leave_together_each_with_its_own_answer():
    replica = Replica()
    coalescer = Coalescer(replica.send, in_flight=2, max_inputs=8)
    tasks = []
    for i in range(7):
        tasks.append(asyncio.create_task(coalescer.submit(i)))
        await _settle()  # one at a time
    assert replica.calls == [[0], [1]]  # two calls out; the other five wait
    replica.release.set()
    assert await asyncio.gather(*tasks) == [i * 10 for i in range(7)]
    assert replica.calls[2:] == [[2, 3, 4, 5, 6]]
    assert (coalescer.calls, coalescer.items) == (3, 7)


async def test_a_group_never_holds_more_than_max_inputs():
    replica = Replica()
    coalescer = Coalescer(replica.send, in_flight=1, max_inputs=5)
    first = asyncio.create_task(coalescer.submit(0, size=1))
    await _settle()
    rest = [asyncio.create_task(coalescer.submit(i, size=2)) for i in range(1, 6)]  # 10 inputs wait
    await _settle()
    replica.release.set()
    await asyncio.gather(first, *rest)
    assert replica.calls[1:] == [[1, 2], [3, 4], [5]]  # 4 + 4 + 2 inputs: never over 5


async def test_an_item_refused_by_the_replica_fails_alone():
    replica = Replica()
    replica.release.set()
    coalescer = Coalescer(replica.send, in_flight=1, max_inputs=8)
    blocker = asyncio.create_task(coalescer.submit(0))
    good, bad = asyncio.create_task(coalescer.submit(1)), asyncio.create_task(coalescer.submit("x"))
    assert await blocker == 0 and await good == 10
    with pytest.raises(ValueError, match="bad x"):
        await bad


async def test_a_failed_call_fails_every_request_in_it_and_the_next_call_goes_on():
    replica = Replica()
    coalescer = Coalescer(replica.send, in_flight=1, max_inputs=8)
    first = asyncio.create_task(coalescer.submit("broken"))
    await _settle()
    later = [asyncio.create_task(coalescer.submit(i)) for i in (1, 2)]
    replica.release.set()
    with pytest.raises(RuntimeError, match="whole call"):
        await first
    assert await asyncio.gather(*later) == [10, 20]


async def test_a_request_whose_caller_went_away_is_not_sent():
    replica = Replica()
    coalescer = Coalescer(replica.send, in_flight=1, max_inputs=8)
    first = asyncio.create_task(coalescer.submit(0))
    await _settle()
    gone, stays = asyncio.create_task(coalescer.submit(1)), asyncio.create_task(coalescer.submit(2))
    await _settle()
    gone.cancel()
    await _settle()
    replica.release.set()
    assert await first == 0 and await stays == 20
    assert replica.calls == [[0], [2]]


async def test_a_call_nobody_waits_for_any_more_is_cancelled():
    replica = Replica()
    coalescer = Coalescer(replica.send, in_flight=1, max_inputs=8)
    first = asyncio.create_task(coalescer.submit(0))
    await _settle()
    group = [asyncio.create_task(coalescer.submit(i)) for i in (1, 2)]
    await _settle()
    first.cancel()  # the only waiter of the call that is out
    await _settle()
    assert replica.cancelled == 1 and replica.calls == [[0], [1, 2]]  # cancelled; the next group went out
    group[0].cancel()
    await _settle()
    assert replica.cancelled == 1  # the other request of that call still waits
    group[1].cancel()
    await _settle()
    assert replica.cancelled == 2
    replica.release.set()
    assert await coalescer.submit(5) == 50  # and the coalescer still serves


# --- through the typed client over the real embedder ------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder(settings):
    entry = next(model for model in CATALOGUE if model.name == "embedder")
    return instantiate(EmbedderDeployment, model=entry.model_dump(mode="json"), cache_dir=str(settings.cache_dir),
                       device="cpu", limits=LimitsArgs(max_embedding_inputs=64, max_embedding_tokens=16).model_dump())


class CountingHandle(LocalHandle):
    def __init__(self, target, calls: list):
        super().__init__(target)
        self.calls = calls

    def __getattr__(self, name):
        self.calls.append(name)
        return super().__getattr__(name)


async def test_concurrent_embedding_requests_share_calls_and_each_gets_its_own_vectors_or_error(embedder, unit_settings):
    calls: list[str] = []
    client = local_core({"embedder": CountingHandle(embedder, calls)}, unit_settings).client
    texts = [f"sentence {i} about coalescing handle calls" for i in range(12)]
    alone = [(await client.embed("embedder", [text]))["vectors"][0] for text in texts[:2]]
    calls.clear()
    too_long = " ".join(["word"] * 40)
    results = await asyncio.gather(*(client.embed("embedder", [text]) for text in texts),
                                   client.embed("embedder", [too_long]), return_exceptions=True)
    assert isinstance(results[-1], InputTooLarge) and "at most 16" in results[-1].message  # only that one refused
    assert all(len(result["vectors"]) == 1 and result["tokens"][0] > 0 for result in results[:-1])
    assert results[0]["vectors"][0] == pytest.approx(alone[0], abs=1e-5)
    assert results[1]["vectors"][0] == pytest.approx(alone[1], abs=1e-5)
    assert set(calls) == {"embed_many"} and len(calls) < len(results)  # fewer handle calls than requests


async def test_a_request_longer_than_a_batch_goes_alone(embedder, unit_settings):
    calls: list[str] = []
    client = local_core({"embedder": CountingHandle(embedder, calls)}, unit_settings).client
    result = await client.embed("embedder", [f"text {i}" for i in range(40)])  # over max_batch_size (32)
    assert len(result["vectors"]) == 40 and calls == ["embed"]


async def test_a_replica_failure_inside_a_coalesced_call_is_a_503_for_that_request(embedder, unit_settings):
    class Broken:
        async def embed_many(self, requests):
            return [RuntimeError("boom") for _ in requests]

    client = local_core({"embedder": LocalHandle(Broken())}, unit_settings).client
    with pytest.raises(ModelUnavailable, match="failed while handling"):
        await client.embed("embedder", ["x"])


# --- autoscaling counts requests, not calls -----------------------------------------------------------------------


class _Config:
    def get_target_ongoing_requests(self) -> float:
        return 16


class _Context:
    def __init__(self, metrics, replicas=1):
        self.aggregated_metrics, self.current_num_replicas, self.config = metrics, replicas, _Config()


async def test_a_coalesced_model_scales_on_the_requests_its_replicas_hold():
    from services.deployments.autoscaling import REQUESTS_IN_FLIGHT, scale_on_requests

    # two calls held, carrying 64 requests: Serve's rule over calls would keep one replica; over requests, four
    assert scale_on_requests(_Context({REQUESTS_IN_FLIGHT: {"replica-a": 40.0, "replica-b": 24.0}}, 2))[0] == 4
    assert scale_on_requests(_Context({REQUESTS_IN_FLIGHT: {"replica-a": 8.0}}))[0] == 0.5


async def test_the_embedder_reports_the_requests_it_holds(embedder):
    from services.deployments.autoscaling import REQUESTS_IN_FLIGHT

    assert embedder.record_autoscaling_stats() == {REQUESTS_IN_FLIGHT: 0}


async def test_the_embedder_counts_each_request_of_a_coalesced_call_while_it_holds_it(embedder):
    from services.deployments.autoscaling import REQUESTS_IN_FLIGHT

    task, seen = asyncio.create_task(embedder.embed_many([([f"text {i}"], None) for i in range(5)])), []
    while not task.done():  # the forward pass runs in a thread: the loop looks on meanwhile
        seen.append(embedder.record_autoscaling_stats()[REQUESTS_IN_FLIGHT])
        await asyncio.sleep(0.001)
    assert all(len(result["vectors"]) == 1 for result in task.result())
    assert max(seen) == 5 and embedder.record_autoscaling_stats()[REQUESTS_IN_FLIGHT] == 0


async def test_the_api_application_gives_coalesced_models_the_request_policy():
    from services.app import model_options
    from services.deployments.autoscaling import POLICY

    entries = {model.name: model for model in CATALOGUE}
    scaling = model_options(entries["embedder"])["autoscaling_config"]
    assert scaling["policy"] == POLICY and scaling["metrics_interval_s"] < 10 and scaling["max_replicas"] >= 1
    assert "policy" not in model_options(entries["digits"])["autoscaling_config"]  # Serve's default: a call is a request
    off = entries["embedder"].model_copy(update={"coalesce_calls": 0})
    assert "policy" not in model_options(off)["autoscaling_config"]
