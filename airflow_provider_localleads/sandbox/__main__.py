"""``python -m airflow_provider_localleads.sandbox``: run the sandbox until Ctrl-C or SIGTERM.

Prints one line on stdout with the base URL and the ``AIRFLOW_CONN_LOCALLEADS_DEFAULT`` to export, so a
script can read the first line to learn the real port when started with ``--port 0``. The key printed
is the sandbox's own fake key, never a real one.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from airflow_provider_localleads.sandbox.server import DEFAULT_API_KEY, SandboxServer, is_loopback_host
from airflow_provider_localleads.sandbox.state import SandboxState

API_KEY_ENV = "LOCALLEADS_SANDBOX_API_KEY"


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _reset_day(text: str) -> int:
    value = _non_negative(text)
    if not 1 <= value <= 31:
        raise argparse.ArgumentTypeError(f"expected a day of the month 1..31, got {value}")
    return value


def _port(text: str) -> int:
    value = _non_negative(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0..65535, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_localleads.sandbox",
        description="Serve a local simulator of the LocalLeads Credits API (and its /_sandbox/ controls).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback only by default)")
    parser.add_argument("--port", type=_port, default=8765, help="port to bind; 0 picks a free one")
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"key the sandbox accepts (default: ${API_KEY_ENV} or {DEFAULT_API_KEY!r})",
    )
    parser.add_argument("--monthly", type=_non_negative, default=100, help="monthlyCredits (default 100)")
    parser.add_argument("--bonus", type=_non_negative, default=25, help="bonusCredits (default 25)")
    parser.add_argument("--used", type=_non_negative, default=43, help="usedCredits (default 43)")
    parser.add_argument("--reset-day", type=_reset_day, default=1, help="billing anniversary day (default 1)")
    parser.add_argument(
        "--transactions",
        type=_non_negative,
        default=None,
        metavar="N",
        help="generate N synthetic transactions instead of a short realistic history",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (the /_sandbox/ controls have no authentication)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log each request line to stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.allow_remote and not is_loopback_host(args.host):
        parser.error(
            f"refusing --host {args.host}: it is not a loopback address and the sandbox's /_sandbox/ "
            "controls are unauthenticated, so anyone who can reach it could change it. "
            "Pass --allow-remote if the network is trusted (e.g. inside a container)."
        )
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or DEFAULT_API_KEY
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        state = SandboxState(
            monthly_credits=args.monthly,
            bonus_credits=args.bonus,
            used_credits=args.used,
            reset_day=args.reset_day,
            seed_transactions=args.transactions,
        )
        server = SandboxServer(args.host, args.port, api_key, state, allow_remote=args.allow_remote)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        server.start()
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, _on_signal)

    conn = shlex.quote(server.connection_json())
    print(f"LocalLeads sandbox on {server.url} -- export AIRFLOW_CONN_LOCALLEADS_DEFAULT={conn}", flush=True)
    print(f"  controls: {server.url}/_sandbox/state ; press Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
