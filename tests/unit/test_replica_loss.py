"""The typed client after a replica dies: calls that would queue for the replacement are refused quickly with
ModelUnavailable (a 503 with Retry-After) instead of waiting until it has loaded; the first call that a replica
takes again ends that. Only Serve's transport is stood in for: a response that no replica takes yet."""

from __future__ import annotations

import asyncio

import pytest
from ray.exceptions import RayActorError

from services.errors import ModelUnavailable
from tests.unit.conftest import local_core


class _Response:
    def __init__(self, outcome, assigned: asyncio.Future):
        self.outcome, self.assigned, self.cancelled = outcome, assigned, False

    async def _fetch_future_result_async(self):
        return await self.assigned

    def __await__(self):
        return self._result().__await__()

    async def _result(self):
        await self.assigned
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def cancel(self):
        self.cancelled = True


class _Handle:
    """``embed.remote()`` answers from a script: each entry is (outcome, whether a replica takes the call)."""

    def __init__(self, script):
        self.script, self.responses = list(script), []

    def __getattr__(self, name):
        return self

    def remote(self, *args, **kwargs):
        outcome, taken = self.script.pop(0)
        assigned = asyncio.get_running_loop().create_future()
        if taken:
            assigned.set_result(None)
        self.responses.append(_Response(outcome, assigned))
        return self.responses[-1]


async def test_after_a_replica_loss_calls_are_refused_quickly_until_one_succeeds(unit_settings):
    handle = _Handle([(RayActorError(), True),  # the call under way when the replica died
                      (None, False),  # the next ones would queue for the replacement
                      ([{"vectors": [[1.0]], "tokens": [1]}], True),  # the replacement serves (embed_many: one per request)
                      ])
    client = local_core({"embedder": handle}, unit_settings, timeout_s=3600).client
    with pytest.raises(ModelUnavailable, match="unavailable"):
        await client.embed("embedder", ["x"])
    with pytest.raises(ModelUnavailable, match="no live replica") as refused:
        await client.embed("embedder", ["x"])  # would wait an hour (the timeout) for a replica without the loss
    assert refused.value.retry_after_s >= 1
    assert handle.responses[1].cancelled  # no replica will work on it later for nobody
    assert (await client.embed("embedder", ["x"]))["tokens"] == [1]
    assert not client._loss("embedder").is_set()


async def test_a_call_queued_when_the_loss_is_seen_is_refused_too(unit_settings):
    handle = _Handle([(None, False), (RayActorError(), True)])
    client = local_core({"embedder": handle}, unit_settings, timeout_s=3600).client
    queued = asyncio.create_task(client.embed("embedder", ["x"]))
    while not handle.responses:  # its call is out
        await asyncio.sleep(0)
    with pytest.raises(ModelUnavailable):
        await client.embed("embedder", ["x"])  # dies: the loss is seen
    with pytest.raises(ModelUnavailable, match="no live replica"):
        await queued
