"""Actions and their confirmation, against a real SQLite file and a real PostgreSQL (as test_storage.py), with the
real JobService. No model is called: the proposals come straight from the test; the model's own proposals are in
test_agent_actions.py."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import func, select

from services.config import ActionArgs, IngressArgs, LimitsArgs, default_catalogue
from services.core.services import build_core
from services.errors import Conflict, InputTooLarge, InvalidInput, NotFound
from services.storage.db import migrate, session_scope
from services.storage.tables import Job
from tests.unit.test_storage import db, postgres_url  # noqa: F401 - the SQLite file / PostgreSQL schema fixtures

ALICE, BOB = "key-alice", "key-bob"


@pytest.fixture
def core(db):  # noqa: F811
    url = db
    declared = [ActionArgs(name="embed_texts", uses="submit_job", arguments={"kind": "embed"}, confirm=False, max_inputs=3)]
    return build_core(default_catalogue(), {}, url, LimitsArgs(), actions=declared)


def jobs(core) -> int:
    with session_scope(core.sessions.database_url) as s:
        return s.scalar(select(func.count()).select_from(Job))


async def waiting_session(core, agent_actions=("submit_job",)):
    await core.agents.create(ALICE, "clerk", "You submit jobs.", actions=list(agent_actions))
    session = await core.sessions.create(ALICE, "work", "clerk")
    action = await core.actions.propose(ALICE, session["id"], "submit_job", {"kind": "embed", "inputs": ["a", "b", "c"]},
                                        tool_call_id="call_1", proposed_by="clerk", model="chat")
    return session["id"], action


async def test_a_proposal_waits_and_runs_nothing(core):
    session_id, action = await waiting_session(core)
    assert action["status"] == "pending" and action["proposed_by"] == "clerk" and action["model"] == "chat"
    assert action["arguments"] == {"kind": "embed", "inputs": ["a", "b", "c"]} and action["proposed_at"]
    stored = await core.sessions.get(ALICE, session_id)
    assert stored["state"] == "waiting_for_confirmation" and stored["pending_action"]["id"] == action["id"]
    assert jobs(core) == 0
    assert [a["id"] for a in await core.actions.pending(ALICE)] == [action["id"]]
    assert await core.actions.pending(BOB) == []


async def test_accept_runs_once_and_a_second_decision_is_a_409_naming_the_first(core):
    session_id, action = await waiting_session(core)
    accepted = await core.actions.accept(ALICE, session_id)
    assert accepted["status"] == "succeeded" and accepted["decided_by"] == ALICE
    job = await core.jobs.get(ALICE, accepted["result"]["job_id"])
    assert job["kind"] == "embed" and job["progress"]["total"] == 3 and jobs(core) == 1
    stored = await core.sessions.get(ALICE, session_id)
    assert stored["state"] == "idle" and stored["pending_action"] is None
    tool = stored["messages"][-1]
    assert tool["role"] == "tool" and tool["tool_call_id"] == "call_1"
    assert tool["content"].startswith("Action submit_job accepted.") and job["id"] in tool["content"]
    for decide in (core.actions.accept(ALICE, session_id), core.actions.accept(ALICE, session_id, action["id"]),
                   core.actions.reject(ALICE, session_id, "too late")):
        with pytest.raises(Conflict, match=f"{action['id']}.*already accepted"):
            await decide
    assert jobs(core) == 1


async def test_reject_records_the_reason_and_runs_nothing(core):
    session_id, action = await waiting_session(core)
    rejected = await core.actions.reject(ALICE, session_id, "Not these texts.")
    assert rejected["status"] == "rejected" and rejected["reason"] == "Not these texts."
    stored = await core.sessions.get(ALICE, session_id)
    assert stored["state"] == "idle" and jobs(core) == 0
    assert stored["messages"][-1] == {**stored["messages"][-1], "role": "tool", "tool_call_id": "call_1",
                                      "content": "Action submit_job rejected by the user. Reason: Not these texts."}
    with pytest.raises(Conflict, match="already rejected.*Not these texts"):
        await core.actions.accept(ALICE, session_id)
    # the model sees the outcome on its next turn: the history answers its call
    conversation = await core.sessions.conversation(ALICE, session_id, [{"role": "user", "content": "Why not?"}])
    assert conversation.messages[-2]["role"] == "tool" and conversation.messages[-2]["tool_call_id"] == "call_1"
    assert conversation.actions == ("submit_job",) and conversation.agent == "clerk"


async def test_concurrent_accepts_create_exactly_one_job(core):
    session_id, action = await waiting_session(core)
    outcomes = await asyncio.gather(*(core.actions.accept(ALICE, session_id) for _ in range(8)), return_exceptions=True)
    winners = [o for o in outcomes if isinstance(o, dict)]
    assert len(winners) == 1 and winners[0]["status"] == "succeeded"
    assert all(isinstance(o, Conflict) for o in outcomes if not isinstance(o, dict)), outcomes
    assert jobs(core) == 1
    stored = await core.sessions.get(ALICE, session_id)
    assert [m["role"] for m in stored["messages"]].count("tool") == 1


async def test_another_keys_session_does_not_exist(core):
    session_id, _ = await waiting_session(core)
    for attempt in (core.actions.accept(BOB, session_id), core.actions.reject(BOB, session_id, "mine now"),
                    core.actions.pending(BOB, session_id)):
        with pytest.raises(NotFound, match="No chat session"):
            await attempt
    assert (await core.sessions.get(ALICE, session_id))["state"] == "waiting_for_confirmation" and jobs(core) == 0


async def test_a_message_while_an_action_waits_is_a_409_naming_it(core):
    session_id, action = await waiting_session(core)
    with pytest.raises(Conflict) as caught:
        await core.chat.start(ALICE, [{"role": "user", "content": "hello?"}], session_id=session_id)
    message = caught.value.message
    assert "submit_job" in message and action["id"] in message
    assert f"/v1/sessions/{session_id}/actions/accept" in message and f"/v1/sessions/{session_id}/actions/reject" in message
    assert len((await core.sessions.get(ALICE, session_id))["messages"]) == 0  # nothing was stored


async def test_a_second_proposal_while_one_waits_is_refused(core):
    session_id, action = await waiting_session(core)
    with pytest.raises(Conflict, match=action["id"]):
        await core.actions.propose(ALICE, session_id, "submit_job", {"kind": "embed", "inputs": ["x"]})
    with pytest.raises(Conflict, match="No action waits"):
        await core.actions.accept(ALICE, (await core.sessions.create(ALICE))["id"])


async def test_a_declared_action_fixes_arguments_bounds_inputs_and_may_run_without_confirmation(core):
    action = core.actions.registry.get("embed_texts")
    assert "kind" not in action.parameters()["properties"] and action.parameters()["properties"]["inputs"]["maxItems"] == 3
    session = await core.sessions.create(ALICE)
    done = await core.actions.propose(ALICE, session["id"], "embed_texts", {"inputs": ["one", "two"]})
    assert done["status"] == "succeeded" and done["decided_by"] == "auto" and done["arguments"]["kind"] == "embed"
    assert (await core.sessions.get(ALICE, session["id"]))["state"] == "idle" and jobs(core) == 1
    with pytest.raises(InputTooLarge, match="at most 3"):
        await core.actions.propose(ALICE, session["id"], "embed_texts", {"inputs": ["1", "2", "3", "4"]})
    with pytest.raises(InvalidInput, match="kind"):
        await core.actions.propose(ALICE, session["id"], "submit_job", {"kind": "translate", "inputs": ["x"]})
    assert (await core.sessions.get(ALICE, session["id"]))["state"] == "idle"


async def test_a_failing_action_is_recorded_and_the_session_goes_back_to_idle(core):
    session = await core.sessions.create(ALICE)
    await core.actions.propose(ALICE, session["id"], "call_remote", {"backend": "nowhere", "inputs": ["hi"]})
    failed = await core.actions.accept(ALICE, session["id"])
    assert failed["status"] == "failed" and "No remote backend named 'nowhere'" in failed["error"]
    stored = await core.sessions.get(ALICE, session["id"])
    assert stored["state"] == "idle" and stored["messages"][-1]["content"].startswith("Action call_remote accepted but failed")


async def test_create_agent_action_and_unknown_actions_on_agents(core):
    with pytest.raises(InvalidInput, match="unknown action.*'rm_rf'"):
        await core.agents.create(ALICE, "bad", "x", actions=["rm_rf"])
    session = await core.sessions.create(ALICE)
    await core.actions.propose(ALICE, session["id"], "create_agent", {"name": "poet", "system_prompt": "Rhyme."})
    result = (await core.actions.accept(ALICE, session["id"]))["result"]
    assert result == {"agent": "poet", "ui_url": "/ui/chat/?agent=poet"}
    assert (await core.agents.get("poet"))["actions"] == []  # an agent an agent creates takes no actions


def test_assistant_tool_calls_are_stored_and_given_back(core):
    async def run():
        session = await core.sessions.create(ALICE)
        call = {"id": "call_9", "type": "function", "function": {"name": "submit_job", "arguments": json.dumps({"kind": "embed"})}}
        await core.sessions.append(ALICE, session["id"], [{"role": "user", "content": "go"},
                                                          {"role": "assistant", "content": None, "tool_calls": [call]}], [1, 5])
        conversation = await core.sessions.conversation(ALICE, session["id"], [])
        return conversation.messages

    messages = asyncio.run(run())
    assert messages[-1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_9", "type": "function", "function": {"name": "submit_job", "arguments": '{"kind": "embed"}'}}]}


def test_declared_actions_are_checked_when_the_config_is_read():
    with pytest.raises(ValueError, match="built in"):
        ActionArgs(name="submit_job", uses="submit_job")
    with pytest.raises(ValueError, match="own name"):
        IngressArgs(actions=[ActionArgs(name="a", uses="submit_job"), ActionArgs(name="a", uses="create_agent")])
    from services.core.actions import ActionRegistry

    with pytest.raises(ValueError, match="no argument"):
        ActionRegistry([ActionArgs(name="a", uses="submit_job", arguments={"colour": "red"})])
    with pytest.raises(ValueError, match="invalid fixed"):
        ActionRegistry([ActionArgs(name="a", uses="submit_job", arguments={"kind": "translate"})])


def test_migration_0002_keeps_existing_sessions_and_agents(tmp_path):
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from services.storage.db import MIGRATIONS, get_engine

    url = f"sqlite:///{tmp_path}/old.db"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "0001")
    with get_engine(url).begin() as connection:
        connection.execute(text("INSERT INTO agents VALUES ('a1', 'old', 'Be old.', 0.7, 64, 'k', '2026-01-01 00:00:00')"))
        connection.execute(text("INSERT INTO chat_sessions VALUES ('s1', 'k', 'old chat', 'a1', '2026-01-01 00:00:00', "
                                "'2026-01-01 00:00:00')"))
        connection.execute(text("INSERT INTO chat_messages (session_id, role, content, tokens, created_at) "
                                "VALUES ('s1', 'user', 'hi', 1, '2026-01-01 00:00:00')"))
    migrate(url)
    core = build_core(default_catalogue(), {}, url, LimitsArgs())
    stored = asyncio.run(core.sessions.get("k", "s1"))
    assert stored["state"] == "idle" and stored["pending_action"] is None
    assert stored["messages"][0]["content"] == "hi" and "tool_calls" not in stored["messages"][0]
    assert asyncio.run(core.agents.get("old"))["actions"] == [] and asyncio.run(core.agents.get("old"))["tool_choice"] == "auto"


async def test_two_deciders_who_both_saw_the_action_pending_cannot_both_win(core):
    """The interleaving concurrent accepts risk, forced: both read `pending`, then both decide. Only the conditional
    UPDATE stands between them and a second run."""
    from services.storage.repositories import SessionActionRepository

    session_id, action = await waiting_session(core)
    url = core.sessions.database_url
    with session_scope(url) as first, session_scope(url) as second:
        assert SessionActionRepository.pending(first, session_id).id == action["id"]
        assert SessionActionRepository.pending(second, session_id).id == action["id"]
        assert SessionActionRepository.decide(first, action["id"], "running", ALICE) is True
        first.commit()
        assert SessionActionRepository.decide(second, action["id"], "running", BOB) is False


def test_call_remote_names_only_declared_remotes():
    from services.core.actions import ActionRegistry

    registry = ActionRegistry([ActionArgs(name="ask", uses="call_remote", arguments={"backend": "space-a"})], ["space-a", "space-b"])
    assert registry.get("call_remote").parameters()["properties"]["backend"]["enum"] == ["space-a", "space-b"]
    assert "backend" not in registry.get("ask").parameters()["properties"]
    assert registry.get("ask").validate({"inputs": ["hi"]}) == {"backend": "space-a", "inputs": ["hi"]}
    with pytest.raises(InvalidInput, match="backend"):
        registry.get("call_remote").validate({"backend": "elsewhere", "inputs": []})
    with pytest.raises(ValueError, match="invalid fixed arguments"):
        ActionRegistry([ActionArgs(name="ask", uses="call_remote", arguments={"backend": "nope"})], ["space-a"])


async def test_the_chat_hook_proposes_one_action_and_answers_the_other_calls(core):
    from services.core.chat import ToolCall, plain_reply

    session = await core.sessions.create(ALICE)
    calls = [ToolCall("call_a", "submit_job", {"kind": "embed", "inputs": ["x"]}),
             ToolCall("call_b", "create_agent", {"name": "second", "system_prompt": "x"})]
    await core.actions.after_turn(ALICE, session["id"], calls, "clerk", "chat")
    stored = await core.sessions.get(ALICE, session["id"])
    assert stored["pending_action"]["tool_call_id"] == "call_a" and stored["state"] == "waiting_for_confirmation"
    answered = stored["messages"][-1]
    assert answered["tool_call_id"] == "call_b" and answered["content"].startswith("Action create_agent was not proposed")
    # `reply` (tool_choice required) is an answer in words, not an action
    text, rest = plain_reply("", [ToolCall("call_r", "reply", {"text": "Hello!"}), calls[0]])
    assert text == "Hello!" and rest == [calls[0]]
    assert plain_reply("plain", []) == ("plain", [])


async def test_a_reason_with_a_nul_character_is_refused_on_both_backends(core):
    session_id, _ = await waiting_session(core)
    with pytest.raises(InvalidInput, match="NUL"):
        await core.actions.reject(ALICE, session_id, "bad\x00reason")
    assert (await core.sessions.get(ALICE, session_id))["state"] == "waiting_for_confirmation"
