"""Actions: server-side tools an agent may take, and the confirmation state machine around them.

An action has a name, a JSON schema for its arguments (a pydantic model), and ``confirm``. Built-ins run through
the core (``submit_job`` → JobService, ``call_remote`` → the remote Gradio deployment, ``create_agent`` →
AgentService); a deployer adds more in config (``ingress.actions``): a built-in under a new name, with arguments
fixed and inputs bounded.

A session's state moves only by compare-and-set in the database, so any number of faces and replicas may race:

    idle ──propose (confirm)──► waiting_for_confirmation ──accept──► running_action ──► idle (result in history)
                                         └──────────────reject (reason)──────────────► idle (reason in history)

A proposal that needs no confirmation is accepted at once by ``"auto"``. The outcome is a ``tool`` message
answering the model's call (``tool_call_id``), so the model reads it on its next turn.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from services.config import ActionArgs
from services.core.agents import AgentService
from services.core.client import ModelClient
from services.core.jobs import JobService
from services.errors import Conflict, InputTooLarge, InvalidInput, NotFound, RaydioError
from services.storage.db import run_in_session
from services.storage.repositories import SessionActionRepository, SessionRepository

logger = logging.getLogger(__name__)

IDLE, WAITING, RUNNING = "idle", "waiting_for_confirmation", "running_action"
ACCEPT_ROUTE, REJECT_ROUTE = "POST /v1/sessions/{id}/actions/accept", "POST /v1/sessions/{id}/actions/reject"


# --- the built-ins' arguments (their JSON schemas are what the model is constrained to) --------------------------

class _Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitJobArguments(_Arguments):
    kind: Literal["embed", "complete"] = Field(description="embed: texts to vectors; complete: prompts to answers.")
    # few: a person reads them before accepting (POST /v1/jobs takes big batches); a small model that repeats
    # itself also stops sooner
    inputs: list[str] = Field(min_length=1, max_length=16, description="The texts, one per result.")


class CallRemoteArguments(_Arguments):
    backend: str = Field(description="The remote Gradio app to call.")
    inputs: list[str | int | float | bool] = Field(max_length=16, description="Its positional inputs.")


class CreateAgentArguments(_Arguments):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="Lower-case letters, digits and dashes.")
    system_prompt: str = Field(min_length=1, max_length=4000, description="What the new agent is told to be.")


BUILTINS: dict[str, tuple[type[_Arguments], str]] = {
    "submit_job": (SubmitJobArguments, "Submit a durable batch job: embed texts or answer prompts in the background. "
                                       "Returns the job's id; it runs after the user accepts."),
    "call_remote": (CallRemoteArguments, "Call a remote Gradio app configured on this server with positional inputs."),
    "create_agent": (CreateAgentArguments, "Create a new chat agent with a name and a system prompt (it can take no "
                                           "actions itself)."),
}
REPLY_TOOL = {"type": "function", "function": {
    "name": "reply", "description": "Answer the user in words, without taking an action.",
    "parameters": {"type": "object", "properties": {"text": {"type": "string", "description": "The answer."}},
                   "required": ["text"], "additionalProperties": False}}}


@dataclass(frozen=True)
class Action:
    """One entry of the registry: what the model may call, and how raydio runs it."""

    name: str
    uses: str  # the built-in that runs it
    description: str
    confirm: bool
    arguments: type[_Arguments]
    fixed: dict = field(default_factory=dict)
    max_inputs: int | None = None

    def parameters(self) -> dict:
        """The JSON schema of the arguments the model chooses (fixed ones left out)."""
        schema = self.arguments.model_json_schema()
        for name in self.fixed:
            schema.get("properties", {}).pop(name, None)
            if name in schema.get("required", []):
                schema["required"] = [r for r in schema["required"] if r != name]
        if self.max_inputs is not None and "inputs" in schema.get("properties", {}):
            schema["properties"]["inputs"]["maxItems"] = min(self.max_inputs, schema["properties"]["inputs"].get("maxItems", self.max_inputs))
        schema.pop("title", None)
        return schema

    def tool(self) -> dict:
        """The action as an OpenAI tool definition."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters()}}

    def describe(self) -> dict:
        return {"name": self.name, "uses": self.uses, "description": self.description, "confirm": self.confirm,
                "parameters": self.parameters(), "fixed_arguments": dict(self.fixed)}

    def validate(self, arguments: dict) -> dict:
        """The model's arguments with the fixed ones applied, checked against the schema and the bounds."""
        if not isinstance(arguments, dict):
            raise InvalidInput(f"Arguments of {self.name} must be a JSON object.", "arguments")
        try:
            checked = self.arguments.model_validate({**arguments, **self.fixed}).model_dump()
        except ValidationError as exc:
            raise InvalidInput(f"Invalid arguments for {self.name}: " + "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors()), "arguments") from None
        if self.max_inputs is not None and len(checked.get("inputs", ())) > self.max_inputs:
            raise InputTooLarge(f"{self.name} takes at most {self.max_inputs} inputs.", "inputs")
        return checked


class ActionRegistry:
    """The built-ins plus the deployer's actions (``ingress.actions``), by name."""

    def __init__(self, declared: Sequence[ActionArgs] = (), remotes: Sequence[str] = ()) -> None:
        self.actions: dict[str, Action] = {}
        for name, (model, description) in BUILTINS.items():
            if name == "call_remote" and remotes:  # the model may only name a declared remote
                model = create_model("CallRemoteArguments", __base__=CallRemoteArguments,
                                     backend=(Literal[tuple(remotes)], Field(description="The remote Gradio app to call.")))
            self.actions[name] = Action(name, name, description, True, model)
        for spec in declared:
            base = self.actions[spec.uses]
            unknown = set(spec.arguments) - set(base.arguments.model_fields)
            if unknown:
                raise ValueError(f"Action {spec.name!r}: {spec.uses} has no argument(s) {', '.join(sorted(unknown))}.")
            action = Action(spec.name, spec.uses, spec.description or base.description, spec.confirm, base.arguments,
                            dict(spec.arguments), spec.max_inputs)
            try:  # the fixed arguments themselves must be valid: checked now, not at a person's accept
                fields = base.arguments.model_fields
                create_model("Fixed", **{k: (fields[k].annotation, fields[k]) for k in spec.arguments}).model_validate(spec.arguments)
            except ValidationError as exc:
                raise ValueError(f"Action {spec.name!r}: invalid fixed arguments: {exc.errors()[0]['msg']}") from None
            self.actions[spec.name] = action

    @property
    def names(self) -> list[str]:
        return list(self.actions)

    def get(self, name: str) -> Action:
        if name not in self.actions:
            raise NotFound(f"No action named {name!r}. Actions: {', '.join(self.actions)}.", "name")
        return self.actions[name]

    def tools(self, names: Sequence[str], tool_choice: str = "auto") -> list[dict]:
        """OpenAI tools for an agent's actions; with ``required``, a ``reply`` tool lets the model answer in words."""
        tools = [self.actions[n].tool() for n in names if n in self.actions]
        return [*tools, REPLY_TOOL] if tools and tool_choice == "required" else tools


# --- the state machine ---------------------------------------------------------------------------------------------

def action_dict(action) -> dict:
    def iso(value):
        return value.isoformat() if value else None

    return {"id": action.id, "object": "session.action", "session_id": action.session_id, "name": action.name,
            "arguments": action.arguments, "tool_call_id": action.tool_call_id, "proposed_by": action.proposed_by,
            "model": action.model, "status": action.status, "reason": action.reason, "result": action.result,
            "error": action.error, "decided_by": action.decided_by, "proposed_at": iso(action.proposed_at),
            "decided_at": iso(action.decided_at), "finished_at": iso(action.finished_at)}


def _decided(action) -> str:
    """How an earlier decision reads in a 409."""
    what = {"rejected": "rejected", "running": "accepted and is running", "succeeded": "accepted",
            "failed": "accepted (and failed)"}.get(action.status, action.status)
    when = f" at {action.decided_at.isoformat()}" if action.decided_at else ""
    reason = f" (reason: {action.reason})" if action.status == "rejected" and action.reason else ""
    return f"Action {action.name!r} ({action.id}) was already {what}{when}{reason}."


def waiting_conflict(session_id: str, action) -> Conflict:
    """The 409 for a new chat message while an action waits (the documented rule: decide first)."""
    if action is None or action.status != "pending":
        return Conflict(f"Session {session_id} is running an action; send the message when it has finished.", "session_id")
    return Conflict(f"Session {session_id} waits for a decision on action {action.name!r} ({action.id}) with arguments "
                    f"{json.dumps(action.arguments)}. Accept it ({ACCEPT_ROUTE.format(id=session_id)}) or reject it "
                    f"({REJECT_ROUTE.format(id=session_id)} with {{\"reason\": ...}}) before sending a message.", "session_id")


def outcome_message(action, status: str, result: Any = None, error: str | None = None, reason: str | None = None) -> str:
    """The ``tool`` message the history records, read by the person and by the model on its next turn."""
    if status == "rejected":
        return f"Action {action.name} rejected by the user. Reason: {reason or 'none given'}"
    if status == "failed":
        return f"Action {action.name} accepted but failed: {error}"
    return f"Action {action.name} accepted. Result: {json.dumps(result)}"


class ActionService:
    """Propose, accept, reject and list actions in sessions. Every method checks the session's owner."""

    def __init__(self, registry: ActionRegistry, database_url: str, jobs: JobService, client: ModelClient,
                 agents: AgentService) -> None:
        self.registry, self.database_url, self.jobs, self.client, self.agents = registry, database_url, jobs, client, agents

    # -- proposing --

    async def propose(self, owner_id: str, session_id: str, name: str, arguments: dict, tool_call_id: str | None = None,
                      proposed_by: str | None = None, model: str | None = None) -> dict:
        """An agent's call of an action. Needs confirmation: stored as pending (the session waits). Otherwise it
        runs at once (accepted by ``auto``). Either way the action's dict comes back."""
        action = self.registry.get(name)
        checked = action.validate(arguments)

        def store(s):
            chat = _session(s, owner_id, session_id)
            stored = SessionActionRepository.propose(s, chat, name, checked, tool_call_id, proposed_by, model)
            if stored is None:
                raise waiting_conflict(session_id, SessionActionRepository.pending(s, session_id))
            return action_dict(stored)

        proposed = await run_in_session(self.database_url, store)
        if action.confirm:
            return proposed
        return await self.accept(owner_id, session_id, proposed["id"], decided_by="auto")

    async def after_turn(self, owner_id: str, session_id: str, tool_calls, agent: str | None, model: str) -> None:
        """The chat hook: each call of an action the model made is proposed. One that cannot be (arguments out of
        bounds, another action already waiting) is answered in the history at once, so every call has its answer."""
        for call in tool_calls:
            try:
                await self.propose(owner_id, session_id, call.name, call.arguments, call.id, agent, model)
            except RaydioError as exc:
                def answer(s, call=call, exc=exc):
                    chat = SessionRepository.get(s, owner_id, session_id)
                    if chat is not None:
                        SessionRepository.append(s, chat, "tool", f"Action {call.name} was not proposed: {exc.message}",
                                                 0, tool_call_id=call.id)

                await run_in_session(self.database_url, answer)

    # -- deciding --

    async def accept(self, owner_id: str, session_id: str, action_id: str | None = None, decided_by: str | None = None) -> dict:
        """Run the waiting action, exactly once: of concurrent accepts, one wins the compare-and-set and runs it, the
        others get a 409 naming that decision. The outcome goes to the history as a ``tool`` message."""
        decided_by = decided_by or owner_id

        def claim(s):
            chat = _session(s, owner_id, session_id)
            action = self._target(s, chat.id, action_id)
            if not SessionActionRepository.decide(s, action.id, "running", decided_by):
                s.expire_all()
                raise Conflict(_decided(SessionActionRepository.get(s, chat.id, action.id)), "action_id")
            SessionRepository.set_state(s, chat.id, WAITING, RUNNING)
            return action.id, action.name, dict(action.arguments)

        claimed_id, name, arguments = await run_in_session(self.database_url, claim)
        result, error = None, None
        try:
            result = await self._run(owner_id, self.registry.get(name), arguments)
        except RaydioError as exc:
            error = exc.message
        except Exception:  # noqa: BLE001 - the session must not stay stuck in running_action
            logger.exception("action %s (%s) failed", name, claimed_id)
            error = "internal error while running the action"

        def finish(s):
            action = SessionActionRepository.get(s, session_id, claimed_id)
            status = "failed" if error else "succeeded"
            SessionActionRepository.finish(s, claimed_id, status, result, error)
            self._record(s, owner_id, session_id, action, outcome_message(action, status, result, error))
            s.flush()
            s.refresh(action)
            return action_dict(action)

        return await run_in_session(self.database_url, finish)

    async def reject(self, owner_id: str, session_id: str, reason: str, action_id: str | None = None) -> dict:
        """Discard the waiting action; the reason goes to the history for the model's next turn."""
        if "\x00" in reason:  # PostgreSQL cannot store it; refused on both backends alike (as storage does)
            raise InvalidInput("Text with a NUL character (\\u0000) cannot be stored (reason); remove it.", "reason")
        def decide(s):
            chat = _session(s, owner_id, session_id)
            action = self._target(s, chat.id, action_id)
            if not SessionActionRepository.decide(s, action.id, "rejected", owner_id, reason):
                s.expire_all()
                raise Conflict(_decided(SessionActionRepository.get(s, chat.id, action.id)), "action_id")
            s.refresh(action)
            self._record(s, owner_id, chat.id, action, outcome_message(action, "rejected", reason=reason))
            return action_dict(action)

        return await run_in_session(self.database_url, decide)

    @staticmethod
    def _target(s, session_id: str, action_id: str | None):
        """The action a decision is about: the named one, else the one waiting; a 409 when it was decided."""
        if action_id is not None:
            action = SessionActionRepository.get(s, session_id, action_id)
            if action is None:
                raise NotFound(f"No action {action_id!r} in session {session_id}.", "action_id")
        else:
            action = SessionActionRepository.pending(s, session_id)
            if action is None:
                last = SessionActionRepository.last(s, session_id)
                raise Conflict(_decided(last) if last else f"No action waits in session {session_id}.", "action_id")
        if action.status != "pending":
            raise Conflict(_decided(action), "action_id")
        return action

    @staticmethod
    def _record(s, owner_id: str, session_id: str, action, content: str) -> None:
        """The outcome as a tool message, and the session back to idle."""
        chat = SessionRepository.get(s, owner_id, session_id)
        if chat is None:  # deleted meanwhile
            return
        SessionRepository.append(s, chat, "tool", content, 0, tool_call_id=action.tool_call_id or action.id)
        chat.state = IDLE

    # -- running --

    async def _run(self, owner_id: str, action: Action, arguments: dict) -> Any:
        if action.uses == "submit_job":
            job = await self.jobs.submit(owner_id, arguments["kind"], arguments["inputs"])
            return {"job_id": job["id"], "kind": job["kind"], "status": job["status"], "items": job["progress"]["total"]}
        if action.uses == "call_remote":
            output = await self.client.call_remote(arguments["backend"], arguments["inputs"])
            return {"backend": arguments["backend"], "output": output}
        if action.uses == "create_agent":
            agent = await self.agents.create(owner_id, arguments["name"], arguments["system_prompt"])
            return {"agent": agent["name"], "ui_url": agent["ui_url"]}
        raise InvalidInput(f"Action {action.name!r} uses {action.uses!r}, which raydio cannot run.", "name")

    # -- reading --

    async def pending(self, owner_id: str, session_id: str | None = None) -> list[dict]:
        """The caller's waiting actions (in one session, or in all of them), oldest first."""
        def read(s):
            if session_id is not None:
                _session(s, owner_id, session_id)
                action = SessionActionRepository.pending(s, session_id)
                return [action_dict(action)] if action else []
            return [action_dict(a) for a in SessionActionRepository.waiting(s, owner_id)]

        return await run_in_session(self.database_url, read)

    async def history(self, owner_id: str, session_id: str) -> list[dict]:
        def read(s):
            _session(s, owner_id, session_id)
            return [action_dict(a) for a in SessionActionRepository.list(s, session_id)]

        return await run_in_session(self.database_url, read)


def _session(s, owner_id: str, session_id: str):
    chat = SessionRepository.get(s, owner_id, session_id)
    if chat is None:
        raise NotFound(f"No chat session {session_id!r} for this key.", "session_id")
    return chat


def build_actions(declared: Sequence[ActionArgs], database_url: str, jobs: JobService, client: ModelClient,
                  agents_factory: Callable[[Callable[[], list[str]]], AgentService]) -> tuple[ActionService, AgentService]:
    registry = ActionRegistry(declared, list(client.remotes))
    agents = agents_factory(lambda: registry.names)
    return ActionService(registry, database_url, jobs, client, agents), agents
