"""Repositories: the only code that writes SQL. Each function takes a Session; callers own the transaction."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from services.storage.tables import Agent, ApiKey, ChatMessage, ChatSession, Job, JobItem, SessionAction, utcnow

KEY_PREFIX = "rdk_"


def hash_secret(secret: str) -> str:
    # API keys carry 256 random bits, so a fast hash is enough (no password stretching needed).
    return hashlib.sha256(secret.encode()).hexdigest()


# --- API keys -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    secret: str  # shown once, never stored


class KeyRepository:
    @staticmethod
    def create(session: Session, name: str, scopes: list[str], rate_limit_per_minute: int | None = None) -> CreatedKey:
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(name=name, secret_hash=hash_secret(secret), scopes=" ".join(sorted(set(scopes))),
                     rate_limit_per_minute=rate_limit_per_minute)
        session.add(key)
        session.flush()
        return CreatedKey(key, secret)

    @staticmethod
    def find_active(session: Session, secret: str) -> ApiKey | None:
        return session.scalar(select(ApiKey).where(ApiKey.secret_hash == hash_secret(secret), ApiKey.revoked_at.is_(None)))

    @staticmethod
    def get(session: Session, key_id: str) -> ApiKey | None:
        return session.get(ApiKey, key_id)

    @staticmethod
    def list(session: Session) -> list[ApiKey]:
        return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))

    @staticmethod
    def revoke(session: Session, key_id: str) -> bool:
        result = session.execute(update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                                 .values(revoked_at=utcnow()))
        return result.rowcount > 0

    @staticmethod
    def count_admins(session: Session) -> int:
        return session.scalar(select(func.count()).select_from(ApiKey).where(
            ApiKey.revoked_at.is_(None), ApiKey.scopes.contains("admin"))) or 0


# --- chat sessions ------------------------------------------------------------------------------

class SessionRepository:
    @staticmethod
    def create(session: Session, owner_id: str, title: str = "", agent_id: str | None = None) -> ChatSession:
        chat = ChatSession(owner_id=owner_id, title=title, agent_id=agent_id)
        session.add(chat)
        session.flush()
        return chat

    @staticmethod
    def get(session: Session, owner_id: str, session_id: str) -> ChatSession | None:
        chat = session.get(ChatSession, session_id)
        return chat if chat is not None and chat.owner_id == owner_id else None  # others' sessions do not exist

    @staticmethod
    def list(session: Session, owner_id: str, limit: int = 100) -> list[ChatSession]:
        return list(session.scalars(select(ChatSession).where(ChatSession.owner_id == owner_id)
                                    .order_by(ChatSession.updated_at.desc()).limit(limit)))

    @staticmethod
    def delete(session: Session, owner_id: str, session_id: str) -> bool:
        return session.execute(delete(ChatSession).where(ChatSession.id == session_id,
                                                         ChatSession.owner_id == owner_id)).rowcount > 0

    @staticmethod
    def append(session: Session, chat: ChatSession, role: str, content: str | None, tokens: int,
               tool_calls: list | None = None, tool_call_id: str | None = None) -> ChatMessage:
        message = ChatMessage(session_id=chat.id, role=role, content=content or "", tokens=tokens,
                              tool_calls=tool_calls or None, tool_call_id=tool_call_id)
        session.add(message)
        chat.updated_at = utcnow()
        if not chat.title and role == "user" and content:
            chat.title = content[:80]
        session.flush()
        return message

    @staticmethod
    def set_state(session: Session, session_id: str, expected: str, state: str) -> bool:
        """Compare-and-set the session's state: False when another request changed it first."""
        return session.execute(update(ChatSession).where(ChatSession.id == session_id, ChatSession.state == expected)
                               .values(state=state, updated_at=utcnow())).rowcount > 0


# --- agents -------------------------------------------------------------------------------------

class AgentRepository:
    @staticmethod
    def create(session: Session, owner_id: str, name: str, system_prompt: str, temperature: float,
               max_tokens: int, actions: list[str] | None = None, tool_choice: str = "auto") -> Agent:
        agent = Agent(owner_id=owner_id, name=name, system_prompt=system_prompt, temperature=temperature,
                      max_tokens=max_tokens, actions=list(actions or []), tool_choice=tool_choice)
        session.add(agent)
        session.flush()
        return agent

    @staticmethod
    def by_name(session: Session, name: str) -> Agent | None:
        return session.scalar(select(Agent).where(Agent.name == name))

    @staticmethod
    def list(session: Session) -> list[Agent]:
        return list(session.scalars(select(Agent).order_by(Agent.created_at)))


# --- actions agents propose in sessions ---------------------------------------------------------

class SessionActionRepository:
    @staticmethod
    def propose(session: Session, chat: ChatSession, name: str, arguments: dict, tool_call_id: str | None,
                proposed_by: str | None, model: str | None) -> SessionAction | None:
        """Store a pending action and put the session in ``waiting_for_confirmation``; None when the session was not
        idle (one action waits at a time)."""
        if not SessionRepository.set_state(session, chat.id, "idle", "waiting_for_confirmation"):
            return None
        action = SessionAction(session_id=chat.id, name=name, arguments=arguments, tool_call_id=tool_call_id,
                               proposed_by=proposed_by, model=model)
        session.add(action)
        session.flush()
        return action

    @staticmethod
    def pending(session: Session, session_id: str) -> SessionAction | None:
        return session.scalar(select(SessionAction).where(SessionAction.session_id == session_id,
                                                          SessionAction.status == "pending"))

    @staticmethod
    def get(session: Session, session_id: str, action_id: str) -> SessionAction | None:
        action = session.get(SessionAction, action_id)
        return action if action is not None and action.session_id == session_id else None

    @staticmethod
    def last(session: Session, session_id: str) -> SessionAction | None:
        return session.scalar(select(SessionAction).where(SessionAction.session_id == session_id)
                              .order_by(SessionAction.proposed_at.desc()).limit(1))

    @staticmethod
    def list(session: Session, session_id: str) -> list[SessionAction]:
        return list(session.scalars(select(SessionAction).where(SessionAction.session_id == session_id)
                                    .order_by(SessionAction.proposed_at)))

    @staticmethod
    def decide(session: Session, action_id: str, status: str, decided_by: str, reason: str | None = None) -> bool:
        """Compare-and-set ``pending`` -> ``status`` (running or rejected). Exactly one of any number of concurrent
        decisions sees True: the database serialises the conditional UPDATE."""
        return session.execute(update(SessionAction).where(SessionAction.id == action_id, SessionAction.status == "pending")
                               .values(status=status, decided_by=decided_by, reason=reason, decided_at=utcnow())
                               ).rowcount > 0

    @staticmethod
    def finish(session: Session, action_id: str, status: str, result=None, error: str | None = None) -> bool:
        return session.execute(update(SessionAction).where(SessionAction.id == action_id, SessionAction.status == "running")
                               .values(status=status, result=result, error=error, finished_at=utcnow())).rowcount > 0

    @staticmethod
    def waiting(session: Session, owner_id: str, limit: int = 100) -> list[SessionAction]:
        """The owner's pending actions, oldest first."""
        return list(session.scalars(select(SessionAction).join(ChatSession, ChatSession.id == SessionAction.session_id)
                                    .where(ChatSession.owner_id == owner_id, SessionAction.status == "pending")
                                    .order_by(SessionAction.proposed_at).limit(limit)))


# --- durable jobs -------------------------------------------------------------------------------

TERMINAL = ("succeeded", "failed", "cancelled")


class JobRepository:
    @staticmethod
    def submit(session: Session, owner_id: str, kind: str, inputs: list[Any], params: dict[str, Any]) -> Job:
        job = Job(owner_id=owner_id, kind=kind, params=params, total=len(inputs))
        job.items = [JobItem(index=i, input=value) for i, value in enumerate(inputs)]
        session.add(job)
        session.flush()
        return job

    @staticmethod
    def get(session: Session, owner_id: str | None, job_id: str) -> Job | None:
        job = session.get(Job, job_id)
        return job if job is not None and (owner_id is None or job.owner_id == owner_id) else None

    @staticmethod
    def list(session: Session, owner_id: str | None, limit: int = 50) -> list[Job]:
        query = select(Job).order_by(Job.created_at.desc()).limit(limit)
        if owner_id is not None:
            query = query.where(Job.owner_id == owner_id)
        return list(session.scalars(query))

    @staticmethod
    def cancel(session: Session, owner_id: str, job_id: str) -> Job | None:
        job = JobRepository.get(session, owner_id, job_id)
        if job is not None and job.status not in TERMINAL:
            job.status, job.finished_at, job.lease_owner = "cancelled", utcnow(), None
        return job

    @staticmethod
    def claim(session: Session, worker: str, lease_s: float) -> Job | None:
        """Take the oldest queued job, or a running one whose runner's lease expired (it died)."""
        now = utcnow()
        candidate = session.scalar(
            select(Job.id).where(or_(Job.status == "queued",
                                     (Job.status == "running") & (Job.lease_expires_at < now)))
            .order_by(Job.created_at).limit(1)
        )
        if candidate is None:
            return None
        # Compare-and-set so two runners never take the same job.
        claimed = session.execute(
            update(Job).where(Job.id == candidate, or_(Job.status == "queued",
                                                       (Job.status == "running") & (Job.lease_expires_at < now)))
            .values(status="running", lease_owner=worker, lease_expires_at=now + timedelta(seconds=lease_s),
                    attempts=Job.attempts + 1, started_at=func.coalesce(Job.started_at, now))
        ).rowcount
        return session.get(Job, candidate) if claimed else None

    @staticmethod
    def renew(session: Session, job_id: str, worker: str, lease_s: float) -> bool:
        """Extend the lease; False when the job was cancelled or taken over (stop working on it)."""
        return session.execute(
            update(Job).where(Job.id == job_id, Job.lease_owner == worker, Job.status == "running")
            .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
        ).rowcount > 0

    @staticmethod
    def pending_items(session: Session, job_id: str, limit: int) -> list[JobItem]:
        return list(session.scalars(select(JobItem).where(JobItem.job_id == job_id, JobItem.finished_at.is_(None))
                                    .order_by(JobItem.index).limit(limit)))

    @staticmethod
    def record(session: Session, job_id: str, worker: str, outputs: dict[int, Any]) -> bool:
        """Store outputs of finished items, once, and only while this worker still holds the lease."""
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.lease_owner != worker or job.status != "running":
            return False
        now = utcnow()
        written = 0
        for index, output in outputs.items():
            written += session.execute(
                update(JobItem).where(JobItem.job_id == job_id, JobItem.index == index, JobItem.finished_at.is_(None))
                .values(output=output, finished_at=now, runs=JobItem.runs + 1)
            ).rowcount
        job.done += written
        if job.done >= job.total:
            job.status, job.finished_at, job.lease_owner = "succeeded", now, None
        return True

    @staticmethod
    def fail(session: Session, job_id: str, worker: str, error: str) -> None:
        session.execute(update(Job).where(Job.id == job_id, Job.lease_owner == worker)
                        .values(status="failed", error=error, finished_at=utcnow(), lease_owner=None))

    @staticmethod
    def counts_by_status(session: Session) -> dict[str, int]:
        return dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
