"""Run the sandbox app under uvicorn in a daemon thread on a loopback port.

``start_sandbox()`` binds the socket itself (port 0 picks a free one), so ``SandboxServer.url`` is
known before uvicorn starts, and returns only once the port accepts connections. ``stop()`` cuts
any injected hang short and waits for uvicorn to finish (well under 2 s). The store is not closed
by ``stop()``: it stays readable for assertions; ``store.close()`` closes it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

import uvicorn

from .app import CONTROL_HEADER, Knobs, create_app
from .store import SandboxIdentity, SandboxStore

STARTUP_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0


class SandboxServer:
    """A running sandbox: ``url``, ``identity``, ``store``, ``knobs``; a context manager.

    ``control_token`` (random per run unless given) is what the admin endpoints require in the
    ``X-Sandbox-Token`` header; ``control_headers`` has it, ready for ``requests``.
    """

    def __init__(
        self,
        identity: SandboxIdentity,
        store: SandboxStore,
        knobs: Knobs,
        host: str = "127.0.0.1",
        port: int = 0,
        control_token: str | None = None,
    ) -> None:
        self.identity = identity
        self.store = store
        self.knobs = knobs
        self.app = create_app(identity, store, knobs, control_token)
        self.control_token: str = self.app.state.sandbox.control_token
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only
        # then, and without it every keep-alive request waits ~40 ms (Nagle vs delayed ACK).
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        bound_host, bound_port = self._socket.getsockname()[:2]
        shown_host = f"[{bound_host}]" if family == socket.AF_INET6 else bound_host
        self.url = f"http://{shown_host}:{bound_port}"
        self._address = (bound_host, bound_port)
        config = uvicorn.Config(
            self.app,
            host=bound_host,
            port=bound_port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"enkash-sandbox-{bound_port}",
            daemon=True,
        )
        self._stopped = False

    def start(self) -> SandboxServer:
        """Start serving; returns once the port accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                raise RuntimeError("the EnKash sandbox failed to start")
            if self._server.started and self._accepts_connections():
                return self
            time.sleep(0.01)
        self.stop()
        raise RuntimeError("the EnKash sandbox did not start in time")

    @property
    def control_headers(self) -> dict[str, str]:
        """Headers for the admin endpoints (``/_sandbox/knobs``, ``stats``, ``reset``)."""
        return {CONTROL_HEADER: self.control_token, "Content-Type": "application/json"}

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection(self._address, timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop serving (idempotent); in-flight injected hangs end with their 504 at once."""
        if self._stopped:
            return
        self._stopped = True
        self.app.state.sandbox.stopping.set()
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT_SECONDS)
        with contextlib.suppress(OSError):
            self._socket.close()

    def __enter__(self) -> SandboxServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SandboxServer(url={self.url!r}, identity={self.identity!r})"  # no token


def start_sandbox(
    identity: SandboxIdentity | None = None,
    store_path: str | os.PathLike[str] | None = None,
    knobs: Knobs | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    store: SandboxStore | None = None,
    control_token: str | None = None,
) -> SandboxServer:
    """Start a sandbox in a daemon thread and return it once it accepts connections.

    ``store_path`` None keeps state in memory; a file keeps it across restarts. Pass ``store``
    instead to reuse an open ``SandboxStore`` (then ``store_path`` must be None).
    ``control_token`` guards the admin endpoints; None makes a random one for this run
    (``server.control_token``).
    """
    identity = identity or SandboxIdentity()
    if store is not None and store_path is not None:
        raise ValueError("give store or store_path, not both")
    if store is None:
        store = SandboxStore(store_path, identity)
    server = SandboxServer(identity, store, knobs or Knobs(), host, port, control_token)
    return server.start()
