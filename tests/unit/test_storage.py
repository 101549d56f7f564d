"""Storage against both backends: a SQLite file and a real PostgreSQL (scripts/test-postgres.sh)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from services.storage.db import get_engine, migrate, session_scope
from services.storage.repositories import AgentRepository, JobRepository, KeyRepository, SessionRepository
from services.storage.tables import ApiKey, ChatMessage

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("RAYDIO_TEST_POSTGRES_URL")
    if not url:
        url = subprocess.run(["bash", str(ROOT / "scripts" / "test-postgres.sh")], check=True, capture_output=True,
                             text=True).stdout.strip()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.requires_postgres)])
def db(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/raydio.db"
        migrate(url)
        yield url
        return
    # A schema of its own for every test, so parallel runs against one server never meet.
    base = request.getfixturevalue("postgres_url")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with get_engine(base).begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    migrate(url)
    yield url
    get_engine(url).dispose()
    with get_engine(base).begin() as connection:
        connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))


def test_migrations_create_every_table_and_are_idempotent(db, tmp_path):
    migrate(db)
    fresh = f"sqlite:///{tmp_path}/a/new/folder/raydio.db"  # a folder that does not exist yet
    migrate(fresh)
    assert "jobs" in inspect(get_engine(fresh)).get_table_names()
    tables = set(inspect(get_engine(db)).get_table_names())
    assert {"api_keys", "chat_sessions", "chat_messages", "agents", "jobs", "job_items", "alembic_version"} <= tables


def test_api_keys_are_stored_hashed_and_can_be_revoked(db):
    with session_scope(db) as s:
        created = KeyRepository.create(s, "ci", ["inference", "admin"])
    assert created.secret.startswith("rdk_") and len(created.secret) > 40
    with session_scope(db) as s:
        stored = s.get(ApiKey, created.key.id)
        assert created.secret not in (stored.secret_hash, stored.name) and len(stored.secret_hash) == 64
        assert KeyRepository.find_active(s, created.secret).scopes == "admin inference"
        assert KeyRepository.find_active(s, created.secret + "x") is None
        assert KeyRepository.count_admins(s) == 1
        assert KeyRepository.revoke(s, created.key.id)
        assert not KeyRepository.revoke(s, created.key.id)
    with session_scope(db) as s:
        assert KeyRepository.find_active(s, created.secret) is None


def test_chat_sessions_belong_to_their_owner(db):
    with session_scope(db) as s:
        chat = SessionRepository.create(s, "alice")
        SessionRepository.append(s, chat, "user", "Hello there", 3)
        SessionRepository.append(s, chat, "assistant", "Hi!", 2)
        SessionRepository.create(s, "bob")
    with session_scope(db) as s:
        mine = SessionRepository.list(s, "alice")
        assert [c.title for c in mine] == ["Hello there"]
        assert [(m.role, m.content, m.tokens) for m in mine[0].messages] == [("user", "Hello there", 3), ("assistant", "Hi!", 2)]
        assert SessionRepository.get(s, "bob", chat.id) is None
        assert not SessionRepository.delete(s, "bob", chat.id)
        assert SessionRepository.delete(s, "alice", chat.id)
    with session_scope(db) as s:
        assert s.query(ChatMessage).filter_by(session_id=chat.id).count() == 0


def test_agent_names_are_unique(db):
    from sqlalchemy.exc import IntegrityError

    with session_scope(db) as s:
        AgentRepository.create(s, "alice", "pirate", "Talk like a pirate.", 0.7, 128)
    with pytest.raises(IntegrityError), session_scope(db) as s:
        AgentRepository.create(s, "bob", "pirate", "Other.", 0.7, 128)


def test_job_items_are_recorded_once_and_leases_hand_over(db):
    with session_scope(db) as s:
        job = JobRepository.submit(s, "alice", "embed", ["a", "b", "c"], {})
    with session_scope(db) as s:
        assert JobRepository.claim(s, "runner-1", lease_s=0.5).id == job.id
        assert JobRepository.claim(s, "runner-2", lease_s=30) is None  # held by runner-1
        assert [i.index for i in JobRepository.pending_items(s, job.id, 10)] == [0, 1, 2]
        assert JobRepository.record(s, job.id, "runner-1", {0: [1.0]})
        assert JobRepository.record(s, job.id, "runner-1", {0: [9.9]})  # a retry of item 0 writes nothing
    time.sleep(0.6)  # runner-1 "dies": its lease runs out
    with session_scope(db) as s:
        taken = JobRepository.claim(s, "runner-2", lease_s=30)
        assert taken.id == job.id and taken.attempts == 2
        assert not JobRepository.record(s, job.id, "runner-1", {1: ["stale"]})  # the old runner is refused
        assert [i.index for i in JobRepository.pending_items(s, job.id, 10)] == [1, 2]
        assert JobRepository.record(s, job.id, "runner-2", {1: [2.0], 2: [3.0]})
    with session_scope(db) as s:
        done = JobRepository.get(s, "alice", job.id)
        assert (done.status, done.done, done.total) == ("succeeded", 3, 3)
        assert [(i.output, i.runs) for i in done.items] == [([1.0], 1), ([2.0], 1), ([3.0], 1)]
        assert JobRepository.get(s, "bob", job.id) is None
        assert JobRepository.counts_by_status(s) == {"succeeded": 1}


def test_cancelled_jobs_stop_their_runner(db):
    with session_scope(db) as s:
        job = JobRepository.submit(s, "alice", "classify", [[0] * 64], {})
    with session_scope(db) as s:
        JobRepository.claim(s, "runner-1", lease_s=30)
        assert JobRepository.cancel(s, "alice", job.id).status == "cancelled"
    with session_scope(db) as s:
        assert not JobRepository.renew(s, job.id, "runner-1", 30)
        assert not JobRepository.record(s, job.id, "runner-1", {0: 3})
        assert JobRepository.claim(s, "runner-2", 30) is None


def test_nul_in_text_is_refused_as_the_clients_mistake_on_both_backends(db):
    """PostgreSQL cannot store NUL in text (psycopg raised: a 500); SQLite could. Both now refuse it alike."""
    from services.errors import InvalidInput

    with pytest.raises(InvalidInput, match=r"NUL character .*chat_sessions\.title"):
        with session_scope(db) as s:
            SessionRepository.create(s, "owner", title="a\x00b")
    with session_scope(db) as s:
        assert SessionRepository.list(s, "owner") == []
        job = JobRepository.submit(s, "owner", "embed", ["a\x00b"], {})  # JSON columns store it escaped
    with session_scope(db) as s:
        assert JobRepository.get(s, "owner", job.id).total == 1
