"""The faces of actions through the real FastAPI app with auth on (two keys): REST routes, the OpenAPI document and
the MCP tools. Proposals come from the core directly; no model is loaded here."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from fastapi.testclient import TestClient

from services.config import AuthArgs, IngressArgs, LimitsArgs, McpArgs, Settings, default_catalogue
from services.core.services import build_core
from services.ingress.app import build_ingress_app
from services.storage.db import migrate, session_scope
from services.storage.repositories import KeyRepository

SECRET = "unit-test-secret-" + "x" * 32


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('actions')}/raydio.db"
    migrate(url)
    with session_scope(url) as s:
        alice, bob = KeyRepository.create(s, "alice", ["inference"]), KeyRepository.create(s, "bob", ["inference"])
    core = build_core(default_catalogue(), {}, url, LimitsArgs())
    args = IngressArgs(mount_ui=False, auth=AuthArgs(key_cache_s=0), mcp=McpArgs(allowed_hosts=("testserver",)))
    app = build_ingress_app(core, args, Settings(database_url=url, jwt_secret=SECRET))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield {"client": client, "core": core, "alice": alice, "bob": bob}


def headers(key) -> dict:
    return {"Authorization": f"Bearer {key.secret}"}


@pytest.fixture
def waiting(world):
    """A session of alice's whose agent proposed submit_job (as the chat hook would), and its action."""
    client, core, alice = world["client"], world["core"], world["alice"]
    name = f"clerk-{next(_agents)}"
    created = client.post("/v1/agents", json={"name": name, "system_prompt": "You submit jobs.", "actions": ["submit_job"]},
                          headers=headers(alice))
    assert created.status_code == 201 and created.json()["actions"] == ["submit_job"], created.text
    session = client.post("/v1/sessions", json={"agent": name}, headers=headers(alice)).json()
    action = asyncio.run(core.actions.propose(alice.key.id, session["id"], "submit_job",
                                              {"kind": "embed", "inputs": ["one", "two", "three"]}, "call_7", name, "chat"))
    return session["id"], action


_agents = itertools.count()


def _error(response, status: int, needle: str = "") -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert needle in message, message
    return message


def test_agents_declare_actions_and_unknown_ones_are_a_400(world):
    client, alice = world["client"], world["alice"]
    listed = {a["name"]: a for a in client.get("/v1/actions", headers=headers(alice)).json()}
    assert set(listed) == {"submit_job", "call_remote", "create_agent"}
    assert listed["submit_job"]["confirm"] is True and listed["submit_job"]["parameters"]["required"] == ["kind", "inputs"]
    _error(client.post("/v1/agents", json={"name": "rogue", "system_prompt": "x", "actions": ["delete_everything"]},
                       headers=headers(alice)), 400, "unknown action(s) 'delete_everything'")
    _error(client.post("/v1/agents", json={"name": "rogue", "system_prompt": "x", "tool_choice": "required"},
                       headers=headers(alice)), 400, "at least one action")
    created = client.post("/v1/agents", json={"name": "router", "system_prompt": "x", "actions": ["create_agent"],
                                              "tool_choice": "required"}, headers=headers(alice)).json()
    assert created["actions"] == ["create_agent"] and created["tool_choice"] == "required"
    assert client.get("/v1/agents/router", headers=headers(alice)).json()["actions"] == ["create_agent"]


def test_accept_through_rest_runs_once_and_shows_in_the_session(world, waiting):
    client, alice = world["client"], world["alice"]
    session_id, action = waiting
    before = client.get(f"/v1/sessions/{session_id}", headers=headers(alice)).json()
    assert before["state"] == "waiting_for_confirmation"
    assert before["pending_action"]["name"] == "submit_job" and before["pending_action"]["proposed_by"].startswith("clerk")
    assert [a["id"] for a in client.get("/v1/actions/pending", headers=headers(alice)).json()["actions"]] == [action["id"]]
    _error(client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "session_id": session_id},
                       headers=headers(alice)), 409, "actions/accept")

    accepted = client.post(f"/v1/sessions/{session_id}/actions/accept", headers=headers(alice))
    assert accepted.status_code == 200, accepted.text
    job_id = accepted.json()["result"]["job_id"]
    assert client.get(f"/v1/jobs/{job_id}", headers=headers(alice)).json()["progress"]["total"] == 3
    again = _error(client.post(f"/v1/sessions/{session_id}/actions/accept", json={"action_id": action["id"]},
                               headers=headers(alice)), 409, "already accepted")
    assert action["id"] in again
    after = client.get(f"/v1/sessions/{session_id}", headers=headers(alice)).json()
    assert after["state"] == "idle" and after["pending_action"] is None
    assert after["messages"][-1]["role"] == "tool" and job_id in after["messages"][-1]["content"]
    history = client.get(f"/v1/sessions/{session_id}/actions", headers=headers(alice)).json()
    assert [(a["id"], a["status"]) for a in history] == [(action["id"], "succeeded")]
    assert [j["id"] for j in client.get("/v1/jobs", headers=headers(alice)).json()].count(job_id) == 1
    client.post(f"/v1/jobs/{job_id}/cancel", headers=headers(alice))


def test_reject_through_rest_and_the_owner_check(world, waiting):
    client, alice, bob = world["client"], world["alice"], world["bob"]
    session_id, action = waiting
    _error(client.post(f"/v1/sessions/{session_id}/actions/accept", headers=headers(bob)), 404, "No chat session")
    _error(client.post(f"/v1/sessions/{session_id}/actions/reject", json={"reason": "x"}, headers=headers(bob)), 404)
    _error(client.post(f"/v1/sessions/{session_id}/actions/reject", json={}, headers=headers(alice)), 400)
    rejected = client.post(f"/v1/sessions/{session_id}/actions/reject", json={"reason": "Wrong texts."}, headers=headers(alice))
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected" and rejected.json()["reason"] == "Wrong texts."
    _error(client.post(f"/v1/sessions/{session_id}/actions/reject", json={"reason": "twice"}, headers=headers(alice)),
           409, "already rejected")
    stored = client.get(f"/v1/sessions/{session_id}", headers=headers(alice)).json()
    assert stored["messages"][-1]["content"] == "Action submit_job rejected by the user. Reason: Wrong texts."
    assert stored["messages"][-1]["tool_call_id"] == "call_7"


def test_the_openapi_document_describes_the_action_routes(world):
    spec = world["client"].get("/openapi.json", headers=headers(world["alice"])).json()
    accept = spec["paths"]["/v1/sessions/{session_id}/actions/accept"]["post"]
    reject = spec["paths"]["/v1/sessions/{session_id}/actions/reject"]["post"]
    for operation in (accept, reject):
        assert {"200", "404", "409"} <= set(operation["responses"])
        assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/SessionAction")
    assert reject["requestBody"]["required"] is True
    detail = spec["components"]["schemas"]["SessionDetail"]["properties"]
    assert "pending_action" in detail and "state" in detail
    assert "actions" in spec["components"]["schemas"]["AgentCreate"]["properties"]
    assert "/v1/actions/pending" in spec["paths"] and "/v1/actions" in spec["paths"]


# --- MCP ----------------------------------------------------------------------------------------

_ids = itertools.count(1)


def _call(client, key, tool: str, **arguments) -> dict:
    response = client.post("/mcp/", json={"jsonrpc": "2.0", "id": next(_ids), "method": "tools/call",
                                          "params": {"name": tool, "arguments": arguments}},
                           headers={"Accept": "application/json, text/event-stream", **headers(key)})
    assert response.status_code == 200, response.text
    data = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    return (json.loads(data[-1]) if data else response.json())["result"]


def test_mcp_lists_accepts_and_rejects_for_the_owner_only(world, waiting):
    client, alice, bob = world["client"], world["alice"], world["bob"]
    session_id, action = waiting
    listed = _call(client, alice, "list_pending_actions", session_id=session_id)["structuredContent"]["actions"]
    assert [a["id"] for a in listed] == [action["id"]] and listed[0]["arguments"]["inputs"] == ["one", "two", "three"]
    assert _call(client, bob, "list_pending_actions")["structuredContent"]["actions"] == []
    foreign = _call(client, bob, "accept_action", session_id=session_id)
    assert foreign["isError"] and "No chat session" in foreign["content"][0]["text"]
    accepted = _call(client, alice, "accept_action", session_id=session_id)["structuredContent"]
    assert accepted["status"] == "succeeded" and accepted["result"]["job_id"]
    twice = _call(client, alice, "reject_action", session_id=session_id, reason="late", action_id=action["id"])
    assert twice["isError"] and "already accepted" in twice["content"][0]["text"]
    client.post(f"/v1/jobs/{accepted['result']['job_id']}/cancel", headers=headers(alice))

    session = client.post("/v1/sessions", json={}, headers=headers(alice)).json()
    asyncio.run(world["core"].actions.propose(alice.key.id, session["id"], "create_agent",
                                              {"name": "mcp-made", "system_prompt": "x"}))
    rejected = _call(client, alice, "reject_action", session_id=session["id"], reason="No new agents.")["structuredContent"]
    assert rejected["status"] == "rejected" and rejected["reason"] == "No new agents."
    assert client.get("/v1/agents/mcp-made", headers=headers(alice)).status_code == 404


async def test_the_official_mcp_client_decides_over_http(world, waiting):
    """The unmodified mcp client, over streamable HTTP to a real uvicorn on 127.0.0.1 (auth on, two keys)."""
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    from tests.unit.test_hostile_input import _Server

    core, alice, bob = world["core"], world["alice"], world["bob"]
    session_id, action = waiting
    args = IngressArgs(mount_ui=False, auth=AuthArgs(key_cache_s=0), mcp=McpArgs(allowed_hosts=("127.0.0.1:*",)))
    app = build_ingress_app(core, args, Settings(database_url=core.sessions.database_url, jwt_secret=SECRET))

    async def call(key, tool: str, **arguments):
        async with (create_mcp_http_client(headers=headers(key)) as http,
                    streamable_http_client(f"http://127.0.0.1:{server.port}/mcp/", http_client=http) as (read, write),
                    ClientSession(read, write) as session):
            await session.initialize()
            tools = {t.name for t in (await session.list_tools()).tools}
            assert {"list_pending_actions", "accept_action", "reject_action"} <= tools
            return await session.call_tool(tool, arguments)

    with _Server(app) as server:
        mine = await call(alice, "list_pending_actions")
        assert action["id"] in [a["id"] for a in mine.structured_content["actions"]]
        foreign = await call(bob, "reject_action", session_id=session_id, reason="not mine")
        assert foreign.is_error and "No chat session" in foreign.content[0].text
        rejected = await call(alice, "reject_action", session_id=session_id, reason="Checked: wrong texts.")
        assert rejected.structured_content["status"] == "rejected"
        again = await call(alice, "accept_action", session_id=session_id, action_id=action["id"])
        assert again.is_error and "already rejected" in again.content[0].text
