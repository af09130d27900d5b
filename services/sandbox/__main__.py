"""``python -m services.sandbox``: serve the EnKash sandbox until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from .app import ENVELOPES, Knobs
from .server import start_sandbox
from .store import SandboxIdentity


def _amount(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise argparse.ArgumentTypeError(f"not an amount: {text!r}") from exc
    if not value.is_finite() or value < 0 or value != value.quantize(Decimal("0.01")):
        raise argparse.ArgumentTypeError("amount must be >= 0 with at most 2 decimals")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("a rate is between 0 and 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    ids, knobs = SandboxIdentity(), Knobs()
    parser = argparse.ArgumentParser(
        prog="python -m services.sandbox",
        description="Serve a stateful model of EnKash's reward API on a local port.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    parser.add_argument(
        "--state", metavar="FILE", default=None, help="sqlite file to keep state in (in memory)"
    )
    parser.add_argument(
        "--control-token",
        metavar="TOKEN",
        default=None,
        help="token the /_sandbox/knobs, /stats and /reset endpoints require in the "
        "X-Sandbox-Token header (at least 16 characters; default: a random one, printed)",
    )
    group = parser.add_argument_group("identity")
    group.add_argument("--partner-id", default=ids.partner_id, help="partnerId header value")
    group.add_argument("--company-id", default=ids.company_id, help="companyId")
    group.add_argument(
        "--card-account-id", default=ids.card_account_id, help="cardAccountId (the pool)"
    )
    group.add_argument("--client-id", default=ids.client_id, help="OAuth client id")
    group.add_argument(
        "--client-secret", default=ids.client_secret, help="OAuth client secret (and AES key)"
    )
    group.add_argument("--username", default=ids.username, help="login username")
    group.add_argument("--password", default=ids.password, help="login password")
    group.add_argument("--company-name", default=ids.company_name, help="companyName")
    group.add_argument(
        "--opening-pool", type=_amount, default=ids.opening_pool, help="pool of a new state"
    )
    group = parser.add_argument_group("behaviour")
    group.add_argument("--encrypt", action="store_true", help="require the AES envelope")
    group.add_argument(
        "--envelope",
        choices=ENVELOPES,
        default=knobs.envelope,
        help="reply field names: documented (code on success, response_code on failure), "
        "code, or response_code for both",
    )
    group.add_argument(
        "--latency-ms", type=float, default=knobs.latency_ms, help="added to every API call"
    )
    group.add_argument(
        "--fail-before-commit-rate", type=_rate, default=0.0, help="P(503, nothing done)"
    )
    group.add_argument(
        "--hang-before-commit-rate",
        type=_rate,
        default=0.0,
        help="P(allocate hangs, commits nothing, then 504)",
    )
    group.add_argument(
        "--error-after-commit-rate", type=_rate, default=0.0, help="P(allocate commits, then 500)"
    )
    group.add_argument(
        "--drop-after-commit-rate",
        type=_rate,
        default=0.0,
        help="P(allocate commits, then hangs and replies 504)",
    )
    group.add_argument(
        "--drop-hang-seconds",
        type=float,
        default=knobs.drop_hang_seconds,
        help="length of an injected hang",
    )
    group.add_argument(
        "--malformed-rate", type=_rate, default=0.0, help="P(allocate commits, reply not JSON)"
    )
    group.add_argument(
        "--wrong-reference-rate",
        type=_rate,
        default=0.0,
        help="P(allocate commits, reply echoes another pgReferenceNumber)",
    )
    group.add_argument(
        "--token-lifetime", type=float, default=knobs.token_lifetime_seconds, help="seconds"
    )
    group.add_argument("--seed", type=int, default=None, help="seed for the fault draws")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.control_token is not None and len(args.control_token) < 16:
        parser.error("--control-token needs at least 16 characters")
    identity = SandboxIdentity(
        partner_id=args.partner_id,
        company_id=args.company_id,
        card_account_id=args.card_account_id,
        client_id=args.client_id,
        client_secret=args.client_secret,
        username=args.username,
        password=args.password,
        company_name=args.company_name,
        opening_pool=args.opening_pool,
    )
    knobs = Knobs(
        latency_ms=args.latency_ms,
        fail_before_commit_rate=args.fail_before_commit_rate,
        hang_before_commit_rate=args.hang_before_commit_rate,
        error_after_commit_rate=args.error_after_commit_rate,
        drop_after_commit_rate=args.drop_after_commit_rate,
        drop_hang_seconds=args.drop_hang_seconds,
        malformed_rate=args.malformed_rate,
        wrong_reference_rate=args.wrong_reference_rate,
        token_lifetime_seconds=args.token_lifetime,
        envelope=args.envelope,
        encrypt=args.encrypt,
        seed=args.seed,
    )
    server = start_sandbox(
        identity,
        args.state,
        knobs,
        host=args.host,
        port=args.port,
        control_token=args.control_token,
    )
    print(f"EnKash sandbox listening on {server.url}", flush=True)
    if args.control_token is None:
        print(f"control token (X-Sandbox-Token header): {server.control_token}", flush=True)
    print(
        f"partnerId={identity.partner_id} companyId={identity.company_id} "
        f"cardAccountId={identity.card_account_id} clientId={identity.client_id} "
        f"state={args.state or 'in memory'} (Ctrl-C to stop)",
        flush=True,
    )
    # Explicit handlers: a shell's background job inherits SIGINT ignored, and SIGTERM should
    # also stop cleanly (the store is sqlite; WAL makes an abrupt end safe, but be tidy).
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    try:
        while not done.wait(0.2):
            pass
    finally:
        server.stop()
        server.store.close()
    print("EnKash sandbox stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
