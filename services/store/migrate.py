"""Opening a ledger: create it, or bring it to the newest schema with Alembic, on every start.

* a fresh database: ``metadata.create_all`` and ``stamp head``;
* a database written before Alembic (a ``schema_version`` row, 1 to 5): stamped at the revision
  its version stands for (``LEGACY_REVISIONS``), then ``upgrade head``;
* an Alembic database: ``upgrade head``;
* a database newer than this code (a revision it does not know): ``SchemaTooNew``, untouched.

It all runs in one write transaction (on PostgreSQL under an advisory lock), so two processes
starting at once never migrate twice, and a failed step leaves the database as it was.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection

from services.store.engine import Database
from services.store.records import SchemaTooNew
from services.store.schema import LEGACY_FENCE, metadata, schema_version
from services.store.summaries import daily_totals  # noqa: F401  (registers its table)

MIGRATIONS = Path(__file__).parent / "migrations"

#: The Alembic revision each pre-Alembic ``schema_version`` stands for (v4 widened EnKash's ids,
#: v5 added worker ownership). Versions 1 and 2 first get the indexes they lacked, then are v3.
LEGACY_REVISIONS = {3: "v3", 4: "v4", 5: "v5"}

_LEGACY_INDEXES = (
    "CREATE INDEX IF NOT EXISTS ix_transactions_card_latest"
    " ON transactions (card_id, status, updated_at, balance_after_cents)",
    "CREATE INDEX IF NOT EXISTS ix_transactions_history"
    " ON transactions (created_at, status, kind, amount_cents, card_id, operator)",
)


def alembic_config(conn: Connection) -> Config:
    """Alembic's configuration for this package's revisions, running on ``conn``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def head() -> str:
    """The newest revision this code knows."""
    found = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert found is not None
    return found


def current_revision(conn: Connection) -> str | None:
    """The revision the database is stamped at (``None``: not an Alembic database yet)."""
    return MigrationContext.configure(conn).get_current_revision()


def open_schema(db: Database) -> None:
    """Create the tables if absent and upgrade an older schema; never a manual step."""
    with db.writing() as conn:
        if conn.dialect.name == "postgresql":
            if db.schema is not None:
                conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{db.schema}"')
            # Two replicas starting at once: one creates/upgrades, the other waits, then sees
            # the finished schema. (SQLite's BEGIN IMMEDIATE already serialises this.)
            key = zlib.crc32(f"points-desk-ledger:{db.schema or ''}".encode())
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        config = alembic_config(conn)
        inspector = sa.inspect(conn)
        revision = current_revision(conn)
        if revision is None:
            legacy = (
                conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()
                if inspector.has_table("schema_version")
                else None
            )
            if legacy is None and not inspector.has_table("transactions"):
                metadata.create_all(conn)
                command.stamp(config, "head")
                _fence(conn)
                return
            if legacy is None or legacy > max(LEGACY_REVISIONS):
                raise SchemaTooNew(
                    f"the ledger's schema is version {legacy}; this Points Desk knows up to "
                    f"{max(LEGACY_REVISIONS)} before its own migrations. Upgrade Points Desk "
                    "before opening this database."
                    if legacy is not None
                    else "the ledger database has tables but no schema version: it was not "
                    "written by Points Desk, or its version row was lost; not opening it."
                )
            if legacy < min(LEGACY_REVISIONS):
                for statement in _LEGACY_INDEXES:
                    conn.execute(sa.text(statement))
            command.stamp(config, LEGACY_REVISIONS[max(legacy, min(LEGACY_REVISIONS))])
        else:
            try:
                ScriptDirectory.from_config(config).get_revision(revision)
            except CommandError:
                raise SchemaTooNew(
                    f"the ledger's schema is at revision {revision!r}, which this Points Desk "
                    "does not know: it was migrated by a newer one. Upgrade Points Desk before "
                    "opening this database."
                ) from None
        command.upgrade(config, "head")
        metadata.create_all(conn, checkfirst=True)  # tables added without a revision of their own
        _fence(conn)


def _fence(conn: Connection) -> None:
    """Leave the legacy version row at ``LEGACY_FENCE``: a pre-Alembic build then refuses."""
    conn.execute(schema_version.delete())
    conn.execute(schema_version.insert().values(version=LEGACY_FENCE))
