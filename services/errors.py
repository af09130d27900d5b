"""What can go wrong in a use case, named by what it proves.

Every error a use case raises on purpose is a ``PointsDeskError`` whose message is a sentence a
program manager can read ("There is no batch B-12.", "Someone else decided this request first.").
Callers catch by meaning:

* ``NotFound``: the thing asked for does not exist (a reference, a batch, an approval request).
* ``Conflict``: it exists, but not in a state that allows this (already decided, already in the
  ledger, a file already queued, a batch already finished).
* ``ApprovalRequired``: allowed only once a second person approves it; nothing was sent.
* ``InvalidInput``: what was given cannot be used as it is (a file, a reason, a field).

What a page says for each lives in one place: ``ui.notice.error_message``.
"""

from __future__ import annotations


class PointsDeskError(Exception):
    """A use case refused or could not do what was asked; ``message`` says why in plain words."""

    @property
    def message(self) -> str:
        return str(self)


class NotFound(PointsDeskError, LookupError):
    """The reference, batch or request asked for does not exist."""


class Conflict(PointsDeskError):
    """It exists, but its state does not allow this (decided, duplicate, finished, ...)."""


class ApprovalRequired(PointsDeskError):
    """Only a second person's approval allows this; nothing was written or sent."""


class InvalidInput(PointsDeskError, ValueError):
    """What was given cannot be used as it is; the message names what to change."""
