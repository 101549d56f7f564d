"""Engine, sessions and migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, String, create_engine, event, inspect
from sqlalchemy.orm import Session, sessionmaker

from services.errors import InvalidInput

MIGRATIONS = Path(__file__).parent / "migrations"
T = TypeVar("T")


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, _record):  # several processes share the file: WAL, and enforce FKs
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


@lru_cache(maxsize=8)
def _sessionmaker(url: str) -> sessionmaker[Session]:
    factory = sessionmaker(get_engine(url), expire_on_commit=False)
    event.listen(factory, "before_flush", _refuse_nul_in_text)
    return factory


def _refuse_nul_in_text(session: Session, _context, _instances) -> None:
    """PostgreSQL cannot store NUL in text (psycopg raises, a 500); SQLite can. Refuse it the same way on both,
    as the client's mistake. JSON columns are stored escaped and may hold it."""
    for obj in (*session.new, *session.dirty):
        mapper = inspect(obj).mapper
        for column in mapper.columns:
            if isinstance(column.type, String) and (value := getattr(obj, mapper.get_property_by_column(column).key, None)):
                if isinstance(value, str) and "\x00" in value:
                    raise InvalidInput(f"Text with a NUL character (\\u0000) cannot be stored "
                                       f"({mapper.local_table.name}.{column.name}); remove it.", column.name)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A transaction: committed when the block ends normally, rolled back on error."""
    session = _sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


async def run_in_session(url: str, work: Callable[[Session], T]) -> T:
    """Run ``work(session)`` in one transaction on a worker thread, so async callers never block their loop."""
    def run() -> T:
        with session_scope(url) as session:
            return work(session)

    return await asyncio.to_thread(run)


def migrate(url: str) -> None:
    """Bring the schema to the newest Alembic revision (idempotent)."""
    from alembic import command
    from alembic.config import Config

    get_engine(url)  # creates a SQLite file's folder
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")
