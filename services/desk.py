"""The running product: settings, ledger, EnKash clients and (in sandbox mode) the sandbox.

One ``Desk`` per process. It is safe to share between threads: the ledger's engine is thread-safe,
and EnKash clients (each with its own ``requests.Session``) are lent to one thread at a time from
a small pool, so no session is ever used by two threads at once. Every client the Desk makes
shares one EnKash sign-in (``self.tokens``): one token per process, renewed once for all threads.
"""

from __future__ import annotations

import getpass
import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from datetime import timedelta
from typing import TYPE_CHECKING

from services.config import EnkashConfig, Settings, load_settings, sandbox_enkash_config
from services.enkash import EnkashClient, Exchange, TokenHolder
from services.store import Ledger

if TYPE_CHECKING:
    from services.bulk import BatchRunner
    from services.worker import Worker

log = logging.getLogger("points_desk")
_RUNNER_LOCK = threading.Lock()


class Desk:
    """Everything a page or a worker needs, wired from settings."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        enkash_config: EnkashConfig | None = None,
        sender: bool | None = None,
        absence_grace: timedelta | None = None,
    ):
        """``sender``: whether this process sends batches and settles unknown outcomes (the
        worker loop of services/worker.py); default ``POINTS_DESK_EMBEDDED_WORKER``. Every Desk
        registers as a worker, so its own in-flight calls (a single credit, an approved debit)
        are never taken for interrupted while it lives. ``absence_grace`` overrides the batch
        job's (sandbox tests)."""
        self.settings = settings or load_settings()
        self.sender = self.settings.points_desk_embedded_worker if sender is None else sender
        self.sandbox = None
        self.worker: Worker | None = None
        if enkash_config is None:
            if self.settings.is_sandbox:
                self.settings.data_dir.mkdir(parents=True, exist_ok=True)
                from services.sandbox import start_sandbox  # only sandbox mode pays for the import
                from services.worker import sandbox_run_info, write_run_file

                self.sandbox = start_sandbox(store_path=self.settings.sandbox_state_path)
                enkash_config = sandbox_enkash_config(self.sandbox.url, self.sandbox.identity)
                # Worker processes (python -m services.worker) read where this sandbox listens.
                write_run_file(self.settings.data_dir, sandbox_run_info(self.sandbox))
            else:
                enkash_config = self.settings.live_enkash_config()
        self.enkash_config = replace(
            enkash_config, timeout_seconds=self.settings.enkash_timeout_seconds
        )
        self.tokens = TokenHolder(self.enkash_config)  # one EnKash sign-in for every client
        self.ledger = Ledger(self.settings.ledger_url)
        stale = timedelta(seconds=self.settings.points_desk_worker_stale_seconds)
        # Only rows of workers that stopped beating: another live process's calls are its own.
        interrupted = self.ledger.recover_interrupted(actor="system", stale_after=stale)
        if interrupted:
            log.warning("%d transaction(s) were interrupted mid-call; now UNKNOWN", interrupted)
        if self.sandbox is not None and self.ledger.totals()["transactions"] == 0:
            # A fresh ledger with an old sandbox file would disagree from the first page: start
            # both empty together.
            self.sandbox.store.reset()
        self._idle_clients: queue.LifoQueue[EnkashClient] = queue.LifoQueue()
        # The background settle pass (services/reconcile.py): only looks unknown outcomes up at
        # EnKash, never resends. POINTS_DESK_SETTLE_INTERVAL_SECONDS=0 turns it off.
        # A dashboard whose sending is done by worker processes leaves this to them.
        self.settle_loop = None
        interval = self.settings.points_desk_settle_interval_seconds
        if interval > 0 and self.sender:
            from services.reconcile import SettleLoop

            self.settle_loop = SettleLoop(self.ledger, self.new_client, interval).start()
        if absence_grace is not None:
            self.runner.absence_grace = absence_grace
        from services.worker import Worker

        self.worker = Worker(self, sends=self.sender).start()

    @property
    def mode(self) -> str:
        return "sandbox" if self.sandbox is not None else "live"

    @property
    def is_sandbox(self) -> bool:
        return self.sandbox is not None

    @contextmanager
    def client(self) -> Iterator[EnkashClient]:
        """Borrow an EnKash client for the current thread; it goes back to the pool afterwards."""
        try:
            client = self._idle_clients.get_nowait()
        except queue.Empty:
            client = self.new_client()
        try:
            yield client
        finally:
            self._idle_clients.put(client)

    def new_client(self) -> EnkashClient:
        """A client owned by the caller (a worker thread), not returned to the pool.

        It has its own session but shares the Desk's token: workers do not sign in one by one.
        """
        return EnkashClient(self.enkash_config, tokens=self.tokens, on_exchange=self._keep_exchange)

    def _keep_exchange(self, exchange: Exchange) -> None:
        """The exchange inspector: every call for a transaction is kept with its reference."""
        self.ledger.record_exchange(**asdict(exchange))

    @property
    def runner(self) -> BatchRunner:
        """The background sender of bulk batches (services/bulk.py), created on first use."""
        with _RUNNER_LOCK:
            runner = getattr(self, "_runner", None)
            if runner is None:
                from services.bulk import BatchRunner

                runner = self._runner = BatchRunner(self.ledger, self.new_client, self.settings)
            return runner

    def pick_up(self, batch_id: str, *, actor: str) -> None:
        """A batch was set ``running``: the embedded worker starts it now; with worker processes
        (``POINTS_DESK_EMBEDDED_WORKER=false``) one of them picks it up at its next poll."""
        if self.worker is not None and self.sender:
            self.worker.pick_up(batch_id, actor=actor)

    def _stop_batches(self) -> None:
        runner = getattr(self, "_runner", None)
        if runner is not None:
            runner.shutdown()

    def reset_sandbox(self) -> None:
        """Clear the sandbox and the ledger together, so they never disagree. Sandbox mode only."""
        if self.sandbox is None:
            raise RuntimeError("reset is only possible on the sandbox")
        self._stop_batches()  # no batch may keep sending into a wiped ledger
        self.sandbox.store.reset()  # forgets the tokens it issued, too
        self.tokens.forget()
        self.ledger.reset()

    def close(self) -> None:
        worker = getattr(self, "worker", None)
        if worker is not None:
            worker.stop()  # no new pick-ups
        if getattr(self, "settle_loop", None) is not None:
            self.settle_loop.stop()
        self._stop_batches()
        if worker is not None:
            worker.deregister()
        while True:
            try:
                self._idle_clients.get_nowait().close()
            except queue.Empty:
                break
        if self.sandbox is not None:
            from services.worker import remove_run_file

            remove_run_file(self.settings.data_dir, self.sandbox.url)
            self.sandbox.stop()
        self.ledger.dispose()


def os_operator() -> str:
    """Who is at the keyboard when no sign-in is configured (sandbox on a laptop)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"
