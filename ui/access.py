"""Who may open which page. Every page declares the capability it needs; see ``app.py``.

Capabilities: ``view`` (overview, history, export), ``move`` (create, credit, debit, bulk,
reconcile) and ``approve`` (the approval queue).
"""

from __future__ import annotations

CAPABILITIES = ("view", "move", "approve")


def allowed(capability: str) -> bool:
    """Whether the person using this session may use pages needing ``capability``."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}")
    return True
