"""Opening a ledger migrates it with Alembic: from today's version 3 databases (with data), from
the later pre-Alembic versions, and refuses one newer than the code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from services import allocations
from services.models import AuditKind, Status
from services.store import SCHEMA_HEAD, Ledger, SchemaTooNew, metadata
from services.store.migrate import LEGACY_REVISIONS
from tests import v3_schema
from tests.pg_support import PG_URL, postgres_schema

LEGACY_TABLES = ["transactions", "audit_events", "batches", "approvals", "sign_in_attempts"]


@pytest.fixture(params=["sqlite", "postgresql"])
def place(request, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """Where a ledger lives: a SQLite file, or a fresh schema on the PostgreSQL test server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}", None
        return
    with postgres_schema() as schema:
        admin = sa.create_engine(PG_URL, poolclass=sa.pool.NullPool)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        admin.dispose()
        yield PG_URL, schema


@contextlib.contextmanager
def raw(place: tuple[str, str | None]) -> Iterator[sa.Connection]:
    """A plain committed connection to the place, outside the store."""
    url, schema = place
    args = {"options": f"-csearch_path={schema}"} if schema else {}
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=args)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def dump(conn: sa.Connection, table: str, columns: list[str]) -> list[tuple]:
    shown = ", ".join(columns)
    query = f"SELECT {shown} FROM {table} ORDER BY {columns[0]}"  # noqa: S608 (fixed names)
    return [tuple(row) for row in conn.exec_driver_sql(query)]


def legacy_dump(place) -> dict[str, list[tuple]]:
    """Every row of every version 3 table, in the version 3 columns."""
    with raw(place) as conn:
        return {
            name: dump(conn, name, [c.name for c in v3_schema.metadata.tables[name].columns])
            for name in LEGACY_TABLES
        }


def open_ledger(place) -> Ledger:
    url, schema = place
    return Ledger(url, schema=schema)


def schema_differences(ledger: Ledger) -> list:
    """What autogenerate would still change: the migrated schema against ``metadata``."""
    with ledger.engine.connect() as conn:
        found = compare_metadata(MigrationContext.configure(conn), metadata)
    # Types SQLite cannot tell apart (varchar/text, naive/aware) are noise, not differences.
    return [d for d in found if not (isinstance(d, list) and d and d[0][0] == "modify_type")]


def test_a_version_3_ledger_with_data_keeps_every_row_and_reaches_head(place):
    with raw(place) as conn:
        v3_schema.build(conn)
    before = legacy_dump(place)
    assert len(before["transactions"]) == len(v3_schema.rows())

    ledger = open_ledger(place)
    try:
        assert ledger.schema_revision() == SCHEMA_HEAD
        assert legacy_dump(place) == before  # every row and audit event, every column as it was
        assert schema_differences(ledger) == []
        # Each old event got the kind its words and statuses stand for.
        with ledger.reading() as conn:
            kinds = dump(conn, "audit_events", ["id", "reference", "detail", "event"])
        expected = [kind for *_, kind in v3_schema.EVENTS] + ["INTENT"]
        assert [event for *_, event in kinds] == expected
        trail = ledger.audit_trail("V3-ABSENT")
        assert [e.kind for e in trail] == [
            AuditKind.INTENT,
            AuditKind.OUTCOME,
            AuditKind.LOOKUP_ABSENT,
        ]
        # The migrated proof of absence still allows the resend it allowed before.
        assert allocations.proof_of_absence(ledger, "V3-ABSENT") is not None
        assert allocations.proof_of_absence(ledger, "V3-ODD") is None
        # The row a version 3 process left in flight has no owner: a restart recovers it.
        assert ledger.claimed_by("V3-SENDING") is None
        assert ledger.recover_interrupted(actor="startup") == 1
        # The widened columns take an id longer than version 3's varchar(64).
        long_id = "ECTR" + "X" * 296
        ledger.transition(
            "V3-SENDING",
            Status.FAILED,
            actor="asha",
            from_statuses=(Status.UNKNOWN,),
            enkash_code=long_id,
        )
        assert ledger.get("V3-SENDING").enkash_code == long_id
        # Worker ownership works on the migrated rows: the old SENDING row had no owner.
        ledger.register_worker("w1", host="here", pid=1)
        assert [w["id"] for w in ledger.live_workers()] == ["w1"]
        assert ledger.get_batch("B-V3").state == "cancelled"
        assert ledger.pending_approval_count() == 1
        # v7: a reversal may wait for approval; the constraint still refuses other kinds, and
        # the v3 approvals came through the copied table untouched (legacy_dump above).
        assert ledger.request_approval("reversal", "V3-REV", Decimal("1"), "asha", "")
        assert not ledger.request_approval("bogus", "V3-BOGUS", Decimal("1"), "asha", "")
        assert ledger.reversed_by("V3-APPROVED") == []
    finally:
        ledger.dispose()

    again = open_ledger(place)  # a second open changes nothing
    try:
        assert again.schema_revision() == SCHEMA_HEAD
        assert len(again.audit_trail("V3-APPROVED")) == 5
        assert [e.kind for e in again.audit_trail("V3-SENDING")] == [
            AuditKind.INTENT,
            AuditKind.RECOVERED,
            AuditKind.OUTCOME,
        ]
    finally:
        again.dispose()


@pytest.mark.parametrize("version", [3, 4, 5])
def test_each_pre_alembic_version_is_stamped_and_upgraded(place, version: int):
    """A ledger at version 4 (widened ids) or 5 (worker ownership) resumes from its revision."""
    with raw(place) as conn:
        v3_schema.build(conn)
        if version >= 4 and conn.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "ALTER TABLE transactions ALTER COLUMN transaction_id TYPE TEXT,"
                " ALTER COLUMN enkash_code TYPE TEXT"
            )
        if version >= 5:
            conn.exec_driver_sql("ALTER TABLE transactions ADD COLUMN claimed_by VARCHAR(64)")
            metadata.tables["workers"].create(conn)
            conn.exec_driver_sql(
                "CREATE INDEX ix_transactions_batch_status_row"
                " ON transactions (batch_id, status, row_number)"
            )
        conn.execute(sa.text("UPDATE schema_version SET version = :v"), {"v": version})
    before = legacy_dump(place)
    assert LEGACY_REVISIONS[version] == f"v{version}"
    ledger = open_ledger(place)
    try:
        assert ledger.schema_revision() == SCHEMA_HEAD
        assert legacy_dump(place) == before
        assert schema_differences(ledger) == []
    finally:
        ledger.dispose()


def test_a_fresh_ledger_is_created_at_head_and_fences_off_older_builds(place):
    ledger = open_ledger(place)
    try:
        assert ledger.schema_revision() == SCHEMA_HEAD
        assert schema_differences(ledger) == []
        with ledger.reading() as conn:
            # A build from before Alembic reads this and refuses the database (version > 5).
            assert dump(conn, "schema_version", ["version"]) == [(6,)]
    finally:
        ledger.dispose()


def test_a_ledger_migrated_by_a_newer_points_desk_is_refused_untouched(place):
    open_ledger(place).dispose()
    with raw(place) as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'v99_from_the_future'")
    with pytest.raises(SchemaTooNew, match="v99_from_the_future"):
        open_ledger(place)
    with raw(place) as conn:
        assert dump(conn, "alembic_version", ["version_num"]) == [("v99_from_the_future",)]


def test_a_pre_alembic_version_newer_than_any_known_is_refused(place):
    with raw(place) as conn:
        v3_schema.build(conn)
        conn.exec_driver_sql("UPDATE schema_version SET version = 99")
    with pytest.raises(SchemaTooNew, match="99"):
        open_ledger(place)
