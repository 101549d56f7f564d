"""An agent with a confirmed action, end to end with the real chat model (SmolLM2-135M, grammar-constrained): it
proposes, nothing runs until a person accepts, accept runs it once, reject records the reason for the next turn."""

from __future__ import annotations

import itertools
import json

import pytest

from services.config import LimitsArgs
from services.core.chat import Sampling
from services.errors import Conflict
from tests.unit.conftest import LocalHandle, local_core

ASK = "Embed these three sentences: The sky is blue. Cats purr loudly. Rain falls in April."
_owners = itertools.count()


@pytest.fixture(scope="module")
def core(deployments, unit_settings):
    """The real models, with room for a call that lists three sentences (the shared fixture allows 64 tokens)."""
    return local_core({name: LocalHandle(obj) for name, obj in deployments.items()}, unit_settings,
                      LimitsArgs(max_completion_tokens=256))


@pytest.fixture
def owner() -> str:
    return f"agent-test-{next(_owners)}"


async def propose(core, owner: str) -> tuple[str, object]:
    name = f"clerk-{owner}"
    await core.agents.create(owner, name, "You are a clerk. To embed texts, call submit_job with kind embed and the "
                             "texts as inputs.", temperature=0, max_tokens=160, actions=["submit_job"], tool_choice="required")
    session = await core.sessions.create(owner, "", name)
    answer = await core.chat.complete(owner, [{"role": "user", "content": ASK}], sampling=Sampling(temperature=0),
                                      session_id=session["id"])
    return session["id"], answer


async def test_the_agent_proposes_submit_job_and_accept_runs_it_once(core, owner):
    session_id, answer = await propose(core, owner)
    assert answer.finish_reason == "tool_calls" and [c.name for c in answer.tool_calls] == ["submit_job"], answer
    arguments = answer.tool_calls[0].arguments
    assert arguments["kind"] in ("embed", "complete") and arguments["inputs"] and all(isinstance(t, str) for t in arguments["inputs"])
    stored = await core.sessions.get(owner, session_id)
    assert stored["state"] == "waiting_for_confirmation"
    pending = stored["pending_action"]
    assert pending["name"] == "submit_job" and pending["arguments"] == arguments and pending["model"] == "chat"
    assert pending["proposed_by"] == f"clerk-{owner}" and pending["tool_call_id"] == answer.tool_calls[0].id
    assert stored["messages"][-1]["tool_calls"][0]["function"]["name"] == "submit_job"
    assert await core.jobs.list(owner) == []  # nothing ran

    accepted = await core.actions.accept(owner, session_id)
    jobs = await core.jobs.list(owner)
    assert [j["id"] for j in jobs] == [accepted["result"]["job_id"]] and jobs[0]["progress"]["total"] == len(arguments["inputs"])
    with pytest.raises(Conflict, match="already accepted"):
        await core.actions.accept(owner, session_id)
    assert len(await core.jobs.list(owner)) == 1
    await core.jobs.cancel(owner, jobs[0]["id"])  # leave no work for other tests
    # the model's next turn sees the outcome (the conversation answers its call), and the session takes messages again
    conversation = await core.sessions.conversation(owner, session_id, [{"role": "user", "content": "Thanks."}])
    assert conversation.messages[-2]["role"] == "tool" and accepted["result"]["job_id"] in conversation.messages[-2]["content"]


async def test_reject_records_the_reason_and_the_model_reads_it(core, owner):
    session_id, answer = await propose(core, owner)
    assert [c.name for c in answer.tool_calls] == ["submit_job"], answer
    await core.actions.reject(owner, session_id, "Use the titles instead.")
    stored = await core.sessions.get(owner, session_id)
    assert stored["state"] == "idle" and await core.jobs.list(owner) == []
    assert stored["messages"][-1]["content"] == "Action submit_job rejected by the user. Reason: Use the titles instead."
    # the next turn runs (no 409) with the rejection in its history
    nxt = await core.chat.complete(owner, [{"role": "user", "content": "Then just say OK."}], sampling=Sampling(temperature=0),
                                   session_id=session_id)
    assert nxt.finish_reason in ("stop", "length", "tool_calls")
    history = (await core.sessions.get(owner, session_id))["messages"]
    assert [m["role"] for m in history][-2:] == ["user", "assistant"]
    assert any(m["role"] == "tool" and "Use the titles instead." in m["content"] for m in history)
    json.dumps(history)  # stored shapes stay JSON


async def test_the_agents_tools_answer_through_rest_with_a_tool_call(core, owner, unit_settings):
    """/v1/chat/completions with a session of the agent: the answer carries the call, the session waits, and a new
    message is a 409 naming the routes."""
    from fastapi.testclient import TestClient

    from services.config import AuthArgs, IngressArgs
    from services.ingress.app import build_ingress_app

    name = f"rest-clerk-{owner}"
    await core.agents.create("local", name, "You are a clerk. To embed texts, call submit_job with kind embed and "
                             "the texts as inputs.", temperature=0, max_tokens=160, actions=["submit_job"], tool_choice="required")
    app = build_ingress_app(core, IngressArgs(mount_ui=False, auth=AuthArgs(enabled=False)), unit_settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        session = client.post("/v1/sessions", json={"agent": name}).json()
        body = {"session_id": session["id"], "temperature": 0, "messages": [{"role": "user", "content": ASK}]}
        answer = client.post("/v1/chat/completions", json=body).json()
        choice = answer["choices"][0]
        assert choice["finish_reason"] == "tool_calls", answer
        call = choice["message"]["tool_calls"][0]
        assert call["function"]["name"] == "submit_job" and json.loads(call["function"]["arguments"])["inputs"]
        stored = client.get(f"/v1/sessions/{session['id']}").json()
        assert stored["state"] == "waiting_for_confirmation" and stored["pending_action"]["tool_call_id"] == call["id"]
        again = client.post("/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": "hello?"}]})
        assert again.status_code == 409 and "actions/reject" in again.json()["error"]["message"]
        assert client.post(f"/v1/sessions/{session['id']}/actions/reject", json={"reason": "no"}).status_code == 200
