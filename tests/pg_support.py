"""The PostgreSQL test server: where it is, whether it answers, and throwaway schemas on it.

``POINTS_DESK_TEST_PG_URL`` overrides the default (postgres@127.0.0.1:5432/test). Tests that need
the server skip, with the reason, when it cannot be reached, so the suite still passes on a laptop.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from services.store import Ledger

PG_URL = os.environ.get(
    "POINTS_DESK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@functools.cache
def pg_unreachable() -> str | None:
    """Why PostgreSQL cannot be used (``None`` when it can); asked once per test run."""
    try:
        engine = sa.create_engine(
            PG_URL, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 3}
        )
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as error:
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return None


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema name on the test server, dropped afterwards; skips when unreachable."""
    import pytest  # here, so benchmarks can use this module without the test dependencies

    reason = pg_unreachable()
    if reason is not None:
        shown = sa.make_url(PG_URL).render_as_string(hide_password=True)
        pytest.skip(f"PostgreSQL not reachable at {shown}: {reason}")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    try:
        yield schema
    finally:
        admin = sa.create_engine(PG_URL, poolclass=sa.pool.NullPool)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


@contextmanager
def postgres_ledger() -> Iterator[Ledger]:
    """A ledger in a fresh schema on the PostgreSQL test server, dropped afterwards; the test is
    skipped (with the reason) when the server cannot be reached."""
    with postgres_schema() as schema:
        ledger = Ledger(PG_URL, schema=schema)
        try:
            yield ledger
        finally:
            ledger.dispose()
