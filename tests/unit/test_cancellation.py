"""Work for nobody stops: a cancelled embedding request stops feeding the model, a closed chat stream stops
generating, and the typed client cancels the handle call it stops waiting for. (The whole path, client
disconnect → proxy → ingress → replica, is tests/integration/test_faults.py's.)"""

from __future__ import annotations

import asyncio

import pytest

from services.config import LimitsArgs
from services.deployments.embedder import EmbedderDeployment
from services.errors import ModelTimeout
from tests.unit.conftest import CATALOGUE, LocalHandle, instantiate, local_core

# One event loop for the module: ``@serve.batch``'s queue belongs to the loop that first used it.
pytestmark = pytest.mark.asyncio(loop_scope="module")

TEXTS = [f"sentence number {i} about cancelling work that nobody waits for" for i in range(64)]


@pytest.fixture(scope="module")
def embedder(settings):
    entry = next(model for model in CATALOGUE if model.name == "embedder")
    deployment = instantiate(EmbedderDeployment, model=entry.model_dump(mode="json"), cache_dir=str(settings.cache_dir),
                             device="cpu", limits=LimitsArgs(max_embedding_inputs=64).model_dump())
    deployment.reconfigure({"max_batch_size": 4, "batch_wait_timeout_s": 0.001})  # 64 texts: 16 pieces of 4
    return deployment


async def test_a_long_request_goes_through_the_model_in_pieces(embedder):
    before = embedder.inputs_embedded
    result = await embedder.embed(TEXTS)
    assert len(result["vectors"]) == len(TEXTS)
    assert embedder.inputs_embedded - before == len(TEXTS)
    alone = (await embedder.embed(TEXTS[:1]))["vectors"][0]
    assert result["vectors"][0] == pytest.approx(alone, abs=1e-5)  # pieces change nothing in the answer


async def test_a_cancelled_embedding_request_stops_after_the_piece_under_way(embedder):
    before = embedder.inputs_embedded
    task = asyncio.create_task(embedder.embed(TEXTS))
    while embedder.inputs_embedded - before < 4:  # the first piece went through the model
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    at_cancel = embedder.inputs_embedded - before
    await embedder.embed(["after"])  # the batcher is sequential: the piece under way has ended when this one has
    done = embedder.inputs_embedded - before - 1
    assert done <= at_cancel + 4  # at most the piece that was under way
    assert done < len(TEXTS)


async def test_a_closed_chat_stream_ends_its_generation(deployments):
    chat = deployments["chat"]
    before = chat.info()["generations"]
    stream = chat.generate([{"role": "user", "content": "Count from one to one hundred in words."}],
                           {"max_tokens": 64, "temperature": 0.0})
    await stream.__anext__()  # token counts
    assert chat.info()["generations"]["active"] == before["active"]  # validation done, not generating yet
    await stream.__anext__()
    assert chat.info()["generations"]["active"] == before["active"] + 1
    await stream.aclose()  # what Serve does to the replica's generator when the caller cancels
    after = chat.info()["generations"]
    assert after["active"] == before["active"]
    assert after["ended"].get("cancelled", 0) == before["ended"].get("cancelled", 0) + 1


async def test_the_client_cancels_a_handle_call_it_stops_waiting_for(embedder, unit_settings):
    responses = []

    class RecordingHandle(LocalHandle):
        def __getattr__(self, name):
            method = super().__getattr__(name)
            remote = method.remote

            def record(*args, **kwargs):
                responses.append(remote(*args, **kwargs))
                return responses[-1]

            method.remote = record
            return method

    client = local_core({"embedder": RecordingHandle(embedder)}, unit_settings, timeout_s=0.01).client
    with pytest.raises(ModelTimeout):
        await client.embed("embedder", TEXTS)
    assert responses[-1].cancelled  # timed out: the replica is told to stop

    client.timeout_s = 60
    task = asyncio.create_task(client.embed("embedder", TEXTS))
    while len(responses) < 2:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert responses[-1].cancelled  # the caller went away: the replica is told to stop
