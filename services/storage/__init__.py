"""Storage layer: SQLAlchemy 2 tables, repositories and Alembic migrations. No web framework here.

SQLite (a file) is the embedded default; any PostgreSQL URL works too (``RAYDIO_DATABASE_URL``).
"""
