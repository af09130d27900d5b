"""The sender: sends running batches and settles unknown outcomes, in its own process or embedded.

``python -m services.worker`` runs one worker process; ``POINTS_DESK_EMBEDDED_WORKER=true`` (the
default) runs the same loop in a background thread of the dashboard instead. A worker:

- **registers** in the ledger's ``workers`` table and beats (``heartbeat_at``) while it lives;
  every row it moves to ``SENDING`` carries its id (``transactions.claimed_by``);
- **picks up** every batch in state ``running`` (within ``POINTS_DESK_WORKER_POLL_SECONDS``;
  a start from the embedded dashboard is immediate) and runs it with the batch job of
  ``services/bulk.py``: settle the batch's unknown rows, send its queue, settle again. Pause,
  resume and cancel are batch states the job obeys. After a crash or a restart nobody has to
  press Resume: the batch is still ``running``, so the next worker to look picks it up;
- **settles what dead workers left**: a ``SENDING`` row whose worker's heartbeat is older than
  ``POINTS_DESK_WORKER_STALE_SECONDS`` becomes ``UNKNOWN`` (``Ledger.recover_interrupted``) and is
  then settled by looking its reference up (the batch job; ``SettleLoop`` for single rows), never
  by a blind resend. A live worker's in-flight rows are never touched.

Several workers may share one PostgreSQL ledger: they share each running batch row by row (the
next queued row is claimed with ``FOR UPDATE SKIP LOCKED``), and when one dies another takes its
rows over once its heartbeat is stale.

In sandbox mode the EnKash sandbox runs inside the dashboard process; the dashboard writes a run
file (``sandbox-run.json`` in the data directory, mode 0600) that says where it listens and with
which identity, and a worker process waits for that file and talks to the same sandbox.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import threading
import time
from dataclasses import asdict, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services import alerts, schedules
from services.config import EnkashConfig, load_settings, sandbox_enkash_config
from services.models import BatchState

if TYPE_CHECKING:
    from services.desk import Desk

log = logging.getLogger("points_desk.worker")

RUN_FILE = "sandbox-run.json"
REPICK_AFTER_SECONDS = 5.0  # a batch still "running" after this process's job ended: retry then
PRUNE_EVERY_SECONDS = 3600.0  # old exchanges are deleted at most this often (and at start)
FORGET_DEAD_AFTER = timedelta(hours=1)  # silent workers owning no row leave the table after this


# --- the sandbox run file -------------------------------------------------------------------------


def run_file_path(data_dir: Path) -> Path:
    return Path(data_dir) / RUN_FILE


def write_run_file(data_dir: Path, info: dict[str, Any]) -> Path:
    """Write ``info`` (JSON) for worker processes; readable by this user only (0600), replaced
    atomically so a reader never sees half a file."""
    path = run_file_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(info, handle, default=str)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return path


def read_run_file(data_dir: Path) -> dict[str, Any] | None:
    """The run file's contents, or ``None`` when there is none (or it cannot be read yet)."""
    try:
        return json.loads(run_file_path(data_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def remove_run_file(data_dir: Path, url: str) -> None:
    """Remove the run file if it still describes the sandbox at ``url`` (not a newer one)."""
    info = read_run_file(data_dir)
    if info is not None and info.get("url") == url:
        with contextlib.suppress(OSError):
            run_file_path(data_dir).unlink()


def sandbox_run_info(server: Any) -> dict[str, Any]:
    """What a worker needs to reach the dashboard's sandbox: its address and identity; and, for
    benchmarks and scripts of the same user, its control token (the file is mode 0600)."""
    return {
        "url": server.url,
        "pid": os.getpid(),
        "identity": asdict(server.identity),
        "control_token": server.control_token,
    }


def sandbox_config(info: dict[str, Any]) -> EnkashConfig:
    """The EnKash client configuration for the sandbox a run file describes."""
    from services.sandbox import SandboxIdentity

    known = {field.name for field in fields(SandboxIdentity)}
    values = {k: v for k, v in dict(info.get("identity") or {}).items() if k in known}
    if "opening_pool" in values:
        values["opening_pool"] = Decimal(str(values["opening_pool"]))
    return sandbox_enkash_config(str(info["url"]), SandboxIdentity(**values))


def _usable(info: dict[str, Any] | None) -> bool:
    """The run file names a process that is alive and a sandbox that accepts connections."""
    if not info or not info.get("url"):
        return False
    pid = info.get("pid")
    if isinstance(pid, int):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False  # left behind by a dashboard that died
        except PermissionError:
            pass
    host_port = str(info["url"]).split("://", 1)[-1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=1):
            return True
    except (OSError, ValueError):
        return False


def wait_for_run_file(
    data_dir: Path, stop: threading.Event, *, timeout: float | None = None
) -> dict[str, Any] | None:
    """Wait until the dashboard's sandbox is up (its run file names a live sandbox); ``None``
    if ``stop`` was set or ``timeout`` passed first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    said = False
    while not stop.is_set():
        info = read_run_file(data_dir)
        if _usable(info):
            return info
        if not said:
            log.info("waiting for the dashboard's sandbox (%s)", run_file_path(data_dir))
            said = True
        if deadline is not None and time.monotonic() > deadline:
            return None
        stop.wait(0.2)
    return None


# --- the worker -----------------------------------------------------------------------------------


def new_worker_id(host: str, pid: int) -> str:
    """Unique per process start, readable in the ``workers`` table: ``host:pid:random``."""
    return f"{host[:40]}:{pid}:{secrets.token_hex(3)}"


class Worker:
    """One process's registration, heartbeat and (when it sends) its batch and recovery loop."""

    def __init__(self, desk: Desk, *, sends: bool):
        settings = desk.settings
        self.desk = desk
        self.sends = sends
        self.host = socket.gethostname() or "localhost"
        self.pid = os.getpid()
        self.id = new_worker_id(self.host, self.pid)
        self.actor = f"worker {self.id}"
        self.poll_seconds = settings.points_desk_worker_poll_seconds
        self.stale_after = timedelta(seconds=settings.points_desk_worker_stale_seconds)
        self.beat_seconds = max(0.1, min(5.0, self.stale_after.total_seconds() / 5))
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._picked: dict[str, float] = {}
        self._last_forget = 0.0
        self._last_prune = 0.0
        self.retention = timedelta(days=settings.points_desk_exchange_retention_days)
        desk.ledger.register_worker(self.id, host=self.host, pid=self.pid)
        # Alerts (services/alerts.py): a rate-limited pass in its own thread, from tick().
        self.alerts = alerts.Ticker(desk.ledger, settings, alerts.pool_reader(desk.client))
        self._beat = threading.Thread(target=self._beat_loop, name="worker-heartbeat", daemon=True)
        self._loop = threading.Thread(target=self._run, name="worker-loop", daemon=True)

    def start(self) -> Worker:
        self._beat.start()
        if self.sends:
            self._loop.start()
        return self

    # -- the loop ----------------------------------------------------------------------------

    def _beat_loop(self) -> None:
        ledger = self.desk.ledger
        while not self._stop.wait(self.beat_seconds):
            try:
                ledger.worker_heartbeat(self.id, host=self.host, pid=self.pid)
            except Exception:
                log.exception("worker heartbeat failed")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("worker pass failed; trying again")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def tick(self) -> None:
        """One pass: settle what dead workers left in flight, prune old exchanges (hourly),
        evaluate and deliver alerts (every POINTS_DESK_ALERT_INTERVAL_SECONDS, in the
        background), turn due schedule occurrences into batches, pick up every running batch."""
        self.recover()
        if not self._last_prune or time.monotonic() - self._last_prune > PRUNE_EVERY_SECONDS:
            self._last_prune = time.monotonic()
            self.prune()
        self.alerts.maybe_start()
        # Due schedule occurrences become running batches (each exactly once), picked up below.
        schedules.materialise_due(
            self.desk.ledger, self.desk.settings, now=datetime.now(UTC), actor=self.actor
        )
        for record in self.desk.ledger.list_batches(limit=1000, states=(BatchState.RUNNING,)):
            if self._stop.is_set():
                return
            last = self._picked.get(record.batch_id)
            if last is not None and time.monotonic() - last < REPICK_AFTER_SECONDS:
                continue
            self.pick_up(record.batch_id)

    def recover(self) -> int:
        """SENDING rows of dead workers (stale heartbeat) become UNKNOWN, to be settled by
        lookup; a live worker's rows are left alone. Returns how many rows moved."""
        ledger = self.desk.ledger
        moved = ledger.recover_interrupted(actor="system", stale_after=self.stale_after)
        if moved:
            log.warning("%d transaction(s) left in flight by a stopped worker: now UNKNOWN", moved)
        if time.monotonic() - self._last_forget > 60:
            self._last_forget = time.monotonic()
            ledger.forget_dead_workers(max(FORGET_DEAD_AFTER, self.stale_after * 4))
        return moved

    def prune(self) -> int:
        """Delete exchanges older than the retention (POINTS_DESK_EXCHANGE_RETENTION_DAYS).
        Only the ``exchanges`` table: ledger rows and audit trails are kept."""
        gone = self.desk.ledger.prune_exchanges(datetime.now(UTC) - self.retention)
        if gone:
            log.info("pruned %d EnKash exchange(s) older than %s", gone, self.retention)
        return gone

    def pick_up(self, batch_id: str, *, actor: str | None = None) -> bool:
        """Run the batch in this process (no-op if this process already runs it)."""
        if not self.sends or self._stop.is_set():
            return False
        self._picked[batch_id] = time.monotonic()
        started = self.desk.runner.start(batch_id, actor=actor or self.actor)
        if started:
            log.info("sending batch %s", batch_id)
        return started

    def wake(self) -> None:
        """Look for work now instead of at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop looking for work and beating (running jobs are stopped by the Desk)."""
        self._stop.set()
        self._wake.set()
        for thread in (self._loop, self._beat):
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout)

    def deregister(self) -> None:
        """Leave the ``workers`` table (a clean stop, after the jobs ended)."""
        try:
            self.desk.ledger.deregister_worker(self.id)
        except Exception:
            log.exception("could not remove worker %s from the ledger", self.id)


# --- python -m services.worker --------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.worker",
        description="Send running bulk batches and settle unknown outcomes (one worker process). "
        "Settings come from the environment and .streamlit/secrets.toml, as for the dashboard.",
    )
    parser.add_argument(
        "--wait-seconds",
        type=float,
        default=None,
        help="sandbox mode: give up if the dashboard's sandbox is not up after this long "
        "(default: wait)",
    )
    parser.add_argument(
        "--absence-grace-seconds",
        type=float,
        default=None,
        help=argparse.SUPPRESS,  # sandbox tests only: its lookups are conclusive at once
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from services.desk import Desk

    settings = load_settings()
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        log.info("stopping (signal %d): rows in flight finish first", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    config = None
    if settings.is_sandbox:
        info = wait_for_run_file(settings.data_dir, stop, timeout=args.wait_seconds)
        if info is None:
            if stop.is_set():
                return 0
            log.error("the dashboard's sandbox did not come up; start the dashboard first")
            return 2
        config = sandbox_config(info)
        log.info("sandbox mode: sending to the dashboard's sandbox at %s", info["url"])
    elif args.absence_grace_seconds is not None:
        parser.error("--absence-grace-seconds is for the sandbox only")
    desk = Desk(settings, enkash_config=config, sender=True)
    if args.absence_grace_seconds is not None:
        desk.runner.absence_grace = timedelta(seconds=args.absence_grace_seconds)
    assert desk.worker is not None
    log.info("worker %s started", desk.worker.id)
    print(f"worker {desk.worker.id} ready", flush=True)
    try:
        stop.wait()
    finally:
        desk.close()
        log.info("worker %s stopped", desk.worker.id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
