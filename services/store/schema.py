"""Every table of the ledger, described once: ``metadata`` is always the LATEST schema.

A fresh database is created from it (and stamped at the newest Alembic revision); an older one is
brought to the same shape by the revisions in ``services/store/migrations``. A change here needs a
new revision there (``tests/test_store_migrations.py`` compares the two).
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from services.models import ApprovalStatus, AuditKind, BatchState, Kind, Status
from services.store.engine import UTCDateTime


def _one_of(column: str, values: Iterable[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


metadata = sa.MetaData()

transactions = sa.Table(
    "transactions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("reference", sa.String(64), nullable=False, unique=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("transaction_type", sa.String(2), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("email", sa.String(320)),
    sa.Column("mobile", sa.String(20)),
    sa.Column("title", sa.String(8)),
    sa.Column("first_name", sa.String(100)),
    sa.Column("gender", sa.String(4)),
    sa.Column("card_id", sa.String(64), index=True),
    # EnKash's own ids and codes: their length is not documented, so they are stored whole (v4).
    sa.Column("transaction_id", sa.Text),
    sa.Column("balance_after_cents", sa.BigInteger),
    sa.Column("enkash_code", sa.Text),
    sa.Column("enkash_message", sa.Text),
    sa.Column("operator", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("batch_id", sa.String(64), index=True),
    sa.Column("row_number", sa.Integer),
    sa.Column("session_id", sa.String(128)),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("approved_by", sa.String(200)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # The worker (``workers.id``) that last moved the row to SENDING: while that worker's
    # heartbeat is fresh, nobody else may call its in-flight row interrupted.
    sa.Column("claimed_by", sa.String(64)),
    # A reversal's original (``services/corrections.py``): the reference whose movement this one
    # undoes, in part or whole. "Reversed by" is the query ``reverses = <reference>`` (v7).
    sa.Column("reverses", sa.String(64), index=True),
    # The programme (``programmes.id``) whose budget the row counts against (v7). Every row the
    # code writes has one; rows from before programmes were migrated to "General".
    sa.Column("programme_id", sa.Integer),
    # A correction row's original: the FAILED row (of an earlier batch) it pays instead. At most
    # one correction per original that has not failed (services/store/batches.py, v8).
    sa.Column("corrects", sa.String(64), index=True),
    sa.CheckConstraint(_one_of("kind", [k.value for k in Kind]), name="ck_transactions_kind"),
    sa.CheckConstraint(_one_of("transaction_type", ["CR", "DR"]), name="ck_transactions_type"),
    sa.CheckConstraint(_one_of("status", [s.value for s in Status]), name="ck_transactions_status"),
    sa.CheckConstraint("amount_cents > 0", name="ck_transactions_amount_positive"),
    sa.UniqueConstraint("batch_id", "row_number", name="uq_transactions_batch_row"),
    sa.Index("ix_transactions_created_at", "created_at"),
    # By status, then last change (v10): the rows left UNKNOWN since a moment (the Overview's
    # alert) are counted from the index alone instead of fetching every such row.
    sa.Index("ix_transactions_status_updated", "status", "updated_at"),
    sa.Index("ix_transactions_kind_created_at", "kind", "created_at"),
    sa.Index("ix_transactions_operator", "operator"),
    sa.Index("ix_transactions_email", "email"),
    sa.Index("ix_transactions_mobile", "mobile"),
    sa.Index("ix_transactions_batch_row", "batch_id", "row_number"),
    # A worker picks a batch's next QUEUED row in row order without scanning the rows sent.
    sa.Index("ix_transactions_batch_status_row", "batch_id", "status", "row_number"),
    # A programme's movements (its statement, History's filter, the counters' consistency check).
    sa.Index("ix_transactions_programme", "programme_id", "status", "created_at"),
    # Each card's latest succeeded row (known balances, History's balance per employee) is one
    # index seek per card instead of a sort of the whole table: 1.7 s -> 0.04 s at 1M rows.
    sa.Index(
        "ix_transactions_card_latest", "card_id", "status", "updated_at", "balance_after_cents"
    ),
    # History's aggregates over a period (totals, series, statuses, opening net, distinct cards)
    # read only these columns: a range scan of this index never touches the table.
    sa.Index(
        "ix_transactions_history",
        "created_at",
        "status",
        "kind",
        "amount_cents",
        "card_id",
        "operator",
    ),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "reference",
        sa.String(64),
        sa.ForeignKey("transactions.reference", name="fk_audit_events_reference"),
        nullable=False,
        index=True,
    ),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("from_status", sa.String(16)),
    sa.Column("to_status", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, default=""),
    # What the event records (``AuditKind``); code reads this, people read ``detail``.
    sa.Column("event", sa.String(24), nullable=False, server_default=AuditKind.NOTE.value),
)

# Before Alembic, the schema's version was this one row (1..5). It stays as a fence: it holds
# ``LEGACY_FENCE``, one past the last version those builds knew, so an older Points Desk refuses
# to open a database this one has migrated instead of writing to a shape it does not know.
schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)
LEGACY_FENCE = 6

# Local sign-in attempts: the durable record behind the lockout (services/auth.py). Never a
# password; an unknown username is stored as "(unknown):" and a keyed hash of it, so a password
# typed into the username box is not kept either.
sign_in_attempts = sa.Table(
    "sign_in_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(200), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("outcome", sa.String(8), nullable=False),
    sa.CheckConstraint(_one_of("outcome", ["ok", "bad", "locked"]), name="ck_sign_in_outcome"),
    sa.Index("ix_sign_in_attempts_username_at", "username", "at"),
)

# What a maker-checker request is about (services/approvals.py): a debit or credit reference (one
# movement), a batch id, a reversal's reference, or a programme's budget raise (the programme
# code). v7 added "reversal", "credit" and "budget".
APPROVAL_KINDS = ("debit", "batch", "reversal", "credit", "budget")

approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("subject_kind", sa.String(8), nullable=False),
    sa.Column("subject", sa.String(64), nullable=False),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("maker", sa.String(200), nullable=False),
    sa.Column("requested_at", UTCDateTime, nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("decided_by", sa.String(200)),
    sa.Column("decided_at", UTCDateTime),
    sa.Column("comment", sa.Text, nullable=False, default=""),
    # What was asked (JSON): for a debit the whole allocation, so the approved request can be
    # recorded and sent exactly as the maker saw it even if its ledger row was never written.
    sa.Column("request", sa.Text, nullable=False, default=""),
    sa.CheckConstraint(_one_of("subject_kind", APPROVAL_KINDS), name="ck_approvals_kind"),
    sa.CheckConstraint(
        _one_of("status", [s.value for s in ApprovalStatus]), name="ck_approvals_status"
    ),
    sa.UniqueConstraint("subject_kind", "subject", name="uq_approvals_subject"),
    sa.Index("ix_approvals_status", "status"),
)

# Every process that sends (a dashboard, a ``python -m services.worker``): it beats while alive.
# A SENDING row whose ``claimed_by`` names a worker with a stale heartbeat (or none) was left
# mid-call by a process that died; only such rows become UNKNOWN (``recover_interrupted``).
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("heartbeat_at", UTCDateTime, nullable=False),
)

# Bulk runs (services/bulk.py): one row per uploaded file that was confirmed. The rows themselves
# are ordinary ``transactions`` rows carrying the batch id; this table holds the run's settings,
# state and totals. ``file_digest`` is unique: the same file can never be queued twice.
BATCH_STATES = tuple(state.value for state in BatchState)

batches = sa.Table(
    "batches",
    metadata,
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("file_name", sa.String(255), nullable=False),
    sa.Column("file_digest", sa.String(64), nullable=False),
    sa.Column("operator", sa.String(200), nullable=False),
    sa.Column("session_id", sa.String(128)),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("concurrency", sa.Integer, nullable=False),
    sa.Column("rate_limit", sa.Float),  # rows per second; NULL = no cap (not money: a float)
    sa.Column("row_count", sa.Integer, nullable=False),
    sa.Column("credit_rows", sa.Integer, nullable=False),
    sa.Column("credit_cents", sa.BigInteger, nullable=False),
    sa.Column("debit_rows", sa.Integer, nullable=False),
    sa.Column("debit_cents", sa.BigInteger, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime),  # the latest start or resume
    sa.Column("finished_at", UTCDateTime),
    sa.Column("heartbeat_at", UTCDateTime),  # a worker is alive while this keeps moving
    sa.Column("note", sa.Text, nullable=False, default=""),
    sa.CheckConstraint(_one_of("state", BATCH_STATES), name="ck_batches_state"),
    sa.UniqueConstraint("file_digest", name="uq_batches_file_digest"),
    sa.Index("ix_batches_created_at", "created_at"),
)

# The rows of a file refused at preview, kept with the batch queued from it (v8): the batch's
# report covers every input row. ``row_values`` is the row's cells as JSON (column -> text).
batch_rejected_rows = sa.Table(
    "batch_rejected_rows",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("batch_id", sa.String(64), nullable=False),
    sa.Column("row_number", sa.Integer, nullable=False),
    sa.Column("row_values", sa.Text, nullable=False),
    sa.Column("problem", sa.Text, nullable=False),
    sa.Index("ix_batch_rejected_rows_batch", "batch_id", "row_number"),
)

# Every call to EnKash made for a transaction (services/enkash.py's exchange hook), kept with its
# reference for the transaction's detail and the support bundle: the request as sent before
# encryption, the reply as read after decryption, both redacted; no header but the partner id.
# Pruned after POINTS_DESK_EXCHANGE_RETENTION_DAYS; never joined to (or deleting) a ledger row.
exchanges = sa.Table(
    "exchanges",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("reference", sa.String(64), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("endpoint", sa.String(255), nullable=False),
    sa.Column("request", sa.Text, nullable=False, default=""),
    sa.Column("reply", sa.Text, nullable=False, default=""),
    sa.Column("http_status", sa.Integer),
    sa.Column("enkash_code", sa.Text),
    sa.Column("enkash_message", sa.Text),
    sa.Column("latency_ms", sa.Integer),
    sa.Column("encrypted", sa.Boolean, nullable=False, default=False),
    sa.Column("error", sa.Text, nullable=False, default=""),
    sa.Index("ix_exchanges_reference_at", "reference", "at"),
    sa.Index("ix_exchanges_at", "at"),
)


# Programmes (services/programmes.py): a budget that credits draw from (v7). ``budget_cents`` NULL
# means no limit ("General"). The three counters are maintained in the same transaction as every
# intent and status move of the programme's rows (services/store/programmes.py), so the budget
# check is one row: remaining = budget - reserved - credited + returned, where ``reserved`` is the
# credits in flight (QUEUED, SENDING, UNKNOWN), ``credited`` the SUCCEEDED credits and
# ``returned`` the SUCCEEDED debits.
PROGRAMME_STATES = ("active", "closed")

programmes = sa.Table(
    "programmes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("code", sa.String(16), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("budget_cents", sa.BigInteger),
    sa.Column("starts_on", sa.Date),  # IST dates, inclusive
    sa.Column("ends_on", sa.Date),
    sa.Column("owner", sa.String(200), nullable=False, server_default=""),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("monthly_operator_limit_cents", sa.BigInteger),
    sa.Column("debit_threshold_cents", sa.BigInteger),
    sa.Column("state", sa.String(8), nullable=False, server_default="active"),
    sa.Column("reserved_cents", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("credited_cents", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("returned_cents", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("created_by", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.CheckConstraint(_one_of("state", PROGRAMME_STATES), name="ck_programmes_state"),
    sa.CheckConstraint(
        "budget_cents IS NULL OR budget_cents >= 0", name="ck_programmes_budget_positive"
    ),
    sa.UniqueConstraint("code", name="uq_programmes_code"),
)

# Each operator's credits from a programme per IST month (in flight or SUCCEEDED), for programmes
# with a monthly operator limit (v9). A credit from the Credit form takes its share with ONE
# conditional upsert (``... WHERE credited_cents + amount <= limit``) in its intent's transaction
# (services/store/programmes.py), so two credits at once cannot both pass the limit.
operator_months = sa.Table(
    "operator_months",
    metadata,
    sa.Column("programme_id", sa.Integer, nullable=False),
    sa.Column("operator", sa.String(200), nullable=False),
    sa.Column("month", sa.Date, nullable=False),  # the first IST day of the month
    sa.Column("credited_cents", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("programme_id", "operator", "month", name="pk_operator_months"),
)

# Every change to a programme (created, edited, budget raised, closed): who, when, what.
programme_events = sa.Table(
    "programme_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("programme_id", sa.Integer, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(24), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Index("ix_programme_events_programme", "programme_id", "id"),
)

#: The programme every movement without one belongs to (and every row from before programmes).
GENERAL_CODE = "GENERAL"


# --- schedules (services/schedules.py, v9_schedules) ---------------------------------------------
# A schedule sends the same rows once, monthly on a day or weekly on a weekday, at an IST time of
# day. ``version`` is the rows in force (``schedule_rows``); an edit of future runs writes its rows
# under ``pending_version`` and its changed rule in ``pending`` (JSON) until a second person
# approves it, while the approved version keeps running. ``next_due_at`` is the next occurrence
# not yet turned into a run: a worker advances it in the transaction that records the run.
SCHEDULE_STATES = ("pending_approval", "active", "paused", "cancelled", "finished")
SCHEDULE_REPEATS = ("once", "monthly", "weekly")
SCHEDULE_RUN_STATES = ("sent", "waiting", "skipped", "refused")

schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("label", sa.String(100), nullable=False),
    sa.Column("programme", sa.String(16), nullable=False),  # programmes.code
    sa.Column("repeat", sa.String(8), nullable=False),
    sa.Column("day_of_month", sa.Integer),  # monthly: 1..31 (clamped to the month's last day)
    sa.Column("weekday", sa.Integer),  # weekly: 0 Monday .. 6 Sunday
    sa.Column("time_of_day", sa.String(5), nullable=False),  # "HH:MM", IST
    sa.Column("start_on", sa.Date, nullable=False),  # IST; a one-off's day
    sa.Column("end_on", sa.Date),  # IST, inclusive
    sa.Column("max_runs", sa.Integer),  # occurrences in all
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("pending_version", sa.Integer),
    sa.Column("pending", sa.Text, nullable=False, default=""),
    sa.Column("maker", sa.String(200), nullable=False),
    sa.Column("checker", sa.String(200)),
    sa.Column("approved_at", UTCDateTime),
    sa.Column("next_due_at", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("note", sa.Text, nullable=False, default=""),
    sa.CheckConstraint(_one_of("state", SCHEDULE_STATES), name="ck_schedules_state"),
    sa.CheckConstraint(_one_of("repeat", SCHEDULE_REPEATS), name="ck_schedules_repeat"),
    sa.Index("ix_schedules_state_due", "state", "next_due_at"),
)

# The rows one version of a schedule sends at each occurrence. A version is never changed: an edit
# writes a new one, so the runs already sent keep the rows they were sent with.
schedule_rows = sa.Table(
    "schedule_rows",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("schedule_id", sa.String(16), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("row_number", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("card_id", sa.String(64)),
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("employee", sa.Text, nullable=False, default=""),  # JSON, a one-off's new account
    sa.CheckConstraint(_one_of("kind", [k.value for k in Kind]), name="ck_schedule_rows_kind"),
    sa.CheckConstraint("amount_cents > 0", name="ck_schedule_rows_amount_positive"),
    sa.UniqueConstraint(
        "schedule_id", "version", "row_number", name="uq_schedule_rows_version_row"
    ),
)

# One row per occurrence that came due: unique per (schedule, due time), so two workers (or one
# catching up after an outage) can never make two runs of one occurrence. ``sent``: it became the
# batch ``batch_id`` (id and row references derived from the schedule and the due time);
# ``waiting``: due longer ago than the catch-up window when a worker saw it, a person decides;
# ``skipped``: a person decided not to send it; ``refused``: the programme could not take it.
schedule_runs = sa.Table(
    "schedule_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("schedule_id", sa.String(16), nullable=False),
    sa.Column("due_at", UTCDateTime, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("batch_id", sa.String(64)),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("net_cents", sa.BigInteger, nullable=False),  # credits less debits
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("note", sa.Text, nullable=False, default=""),
    sa.CheckConstraint(_one_of("state", SCHEDULE_RUN_STATES), name="ck_schedule_runs_state"),
    sa.UniqueConstraint("schedule_id", "due_at", name="uq_schedule_runs_due"),
    sa.Index("ix_schedule_runs_created_at", "created_at"),
)

# Every change to a schedule (set up, approved, edited, paused, resumed, cancelled) and every
# decision about a late run (sent now, skipped): who, when, what; written with the change.
schedule_events = sa.Table(
    "schedule_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("schedule_id", sa.String(16), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(24), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, default=""),
    sa.Index("ix_schedule_events_schedule", "schedule_id", "id"),
)
