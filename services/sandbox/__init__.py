"""An embedded, stateful model of EnKash's reward API (see ENKASH_API.md), for tests and demos.

It shares no code with ``services/enkash.py`` (the client) so that a mistake in one cannot hide
in the other. ``start_sandbox()`` serves it on a loopback port; ``python -m services.sandbox`` runs
it from the command line. Behaviour the documentation does not pin down is marked **assumed** in
the docstrings of ``app.py`` and ``store.py``.
"""

from .app import Knobs, create_app
from .server import SandboxServer, start_sandbox
from .store import SandboxIdentity, SandboxStore

__all__ = [
    "Knobs",
    "SandboxIdentity",
    "SandboxServer",
    "SandboxStore",
    "create_app",
    "start_sandbox",
]
