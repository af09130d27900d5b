"""Fast bulk seeding of a ledger with a realistic mix of rows (benchmarks and screenshots only).

Rows go straight into the ``transactions`` table (sqlite3 ``executemany`` / PostgreSQL ``COPY``),
bypassing the allocate flow: a million rows take seconds instead of hours. The mix: ~5k cards,
each opened by a ``create``; then credits (~80%) and debits (~15%), 12 months of history, ~95%
succeeded, a few failed / unknown / queued, a third of the rows in batches, several operators.
Each card's ``balance_after`` is its running balance, so balances read back consistently.
The daily totals (services/store/summaries.py) are rebuilt from the rows at the end.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from services.demo import MEN, WOMEN
from services.store import Ledger, transactions

FIRST_NAMES = [*MEN, *WOMEN]  # the demo loader's names
OPERATORS = [
    "priya.menon",
    "arjun.rao",
    "kavya.iyer",
    "rahul.sharma",
    "neha.gupta",
    "vikram.singh",
    "ops-bot",
    "meera.nair",
]
COLUMNS = [c.name for c in transactions.columns if c.name != "id"]


def _mobile(rng: random.Random) -> str:
    return str(rng.choice("9876")) + "".join(str(rng.randrange(10)) for _ in range(9))


def generate(
    n: int,
    *,
    cards: int = 5000,
    months: int = 12,
    seed: int = 7,
    now=None,
    programme_ids: list[int] | None = None,
):
    """Yield ``n`` row dicts in creation order, ending about ``now``; each row in one of
    ``programme_ids`` (at random; none given: no programme)."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    start = now - timedelta(days=30.4 * months)
    span = (now - start).total_seconds()
    cards = max(1, min(cards, n // 2 or 1))
    people = []
    for i in range(cards):
        name = rng.choice(FIRST_NAMES)
        people.append(
            (
                f"EKC{i:07d}",
                f"{name.lower()}.{i}@partner.example",
                _mobile(rng),
                name,
                "F" if name[-1] in "aiy" else "M",
            )
        )
    balance = [0] * cards
    opened = [False] * cards
    batch, batch_left, batch_row = None, 0, 0
    step = span / n
    for i in range(n):
        created = start + timedelta(seconds=i * step + rng.random() * step)
        card_index = rng.randrange(cards) if i >= cards else i
        card, email, mobile, name, gender = people[card_index]
        roll = rng.random()
        if not opened[card_index]:
            kind = "create"
        elif roll < 0.15:
            kind = "debit"
        else:
            kind = "credit"
        amount = rng.choice([100, 250, 500, 1000, 1500, 2000, 5000]) * 100 + rng.choice([0, 50])
        if kind == "debit":
            amount = min(amount, balance[card_index]) or 100
        status_roll = rng.random()
        status = (
            "SUCCEEDED"
            if status_roll < 0.95
            else "FAILED"
            if status_roll < 0.985
            else "UNKNOWN"
            if status_roll < 0.995
            else "QUEUED"
        )
        if kind == "debit" and amount > balance[card_index]:
            status = "FAILED"
        if status == "SUCCEEDED":
            balance[card_index] += -amount if kind == "debit" else amount
            opened[card_index] = True
        if batch_left == 0 and rng.random() < 0.002:
            batch, batch_left, batch_row = f"B{created:%y%m%d}{i:07d}", rng.randrange(50, 800), 0
        in_batch = batch_left > 0
        if in_batch:
            batch_left -= 1
            batch_row += 1
        yield {
            "reference": f"PD{i:010d}",
            "kind": kind,
            "transaction_type": "DR" if kind == "debit" else "CR",
            "status": status,
            "amount_cents": amount,
            "email": email,
            "mobile": mobile,
            "title": "Ms" if gender == "F" else "Mr",
            "first_name": name,
            "gender": gender,
            "card_id": card if status in ("SUCCEEDED", "UNKNOWN") or kind != "create" else None,
            "transaction_id": f"TXN{i:012d}" if status == "SUCCEEDED" else None,
            "balance_after_cents": balance[card_index] if status == "SUCCEEDED" else None,
            "enkash_code": "1" if status == "FAILED" else None,
            "enkash_message": "Insufficient balance in card" if status == "FAILED" else None,
            "operator": "ops-bot" if in_batch else rng.choice(OPERATORS),
            "reason": rng.choice(["Monthly incentive", "Diwali bonus", "Target achieved", ""]),
            "batch_id": batch if in_batch else None,
            "row_number": batch_row if in_batch else None,
            "session_id": f"s{rng.randrange(300):04d}",
            "attempts": 0 if status == "QUEUED" else 1,
            "approved_by": None,
            "created_at": created,
            "updated_at": created + timedelta(seconds=rng.random() * 3),
            "claimed_by": None,
            "programme_id": rng.choice(programme_ids) if programme_ids else None,
        }


def bulk_insert(ledger: Ledger, rows, chunk: int = 50_000) -> int:
    """Insert generated rows as fast as the database allows; returns the count."""
    total = 0
    dialect = ledger.engine.dialect.name
    with ledger.engine.begin() as conn:
        raw = conn.connection.driver_connection
        buffer: list[dict] = []

        def flush() -> None:
            nonlocal total
            if not buffer:
                return
            if dialect == "sqlite":
                values = [
                    tuple(
                        v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
                        if isinstance(v, datetime)
                        else v
                        for v in (row.get(c) for c in COLUMNS)
                    )
                    for row in buffer
                ]
                marks = ",".join("?" * len(COLUMNS))
                raw.executemany(
                    f"INSERT INTO transactions ({','.join(COLUMNS)}) VALUES ({marks})",  # noqa: S608
                    values,
                )
            else:
                with raw.cursor() as cursor:
                    copy_sql = f"COPY transactions ({','.join(COLUMNS)}) FROM STDIN"
                    with cursor.copy(copy_sql) as copy:
                        for row in buffer:
                            copy.write_row([row.get(c) for c in COLUMNS])
            total += len(buffer)
            buffer.clear()

        for row in rows:
            buffer.append(row)
            if len(buffer) >= chunk:
                flush()
        flush()
    # Written around the store: the daily totals are rebuilt from the rows, then analysed.
    ledger.rebuild_summaries()
    if dialect == "postgresql":
        # VACUUM as autovacuum would soon after: index-only scans need the visibility map.
        with ledger.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            for table in ("transactions", "daily_totals", "card_days", "card_balances"):
                conn.exec_driver_sql(f"VACUUM ANALYZE {table}")
    else:
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    return total
