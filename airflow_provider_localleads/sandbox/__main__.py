"""``python -m airflow_provider_localleads.sandbox``: run the sandbox, or drive a running one.

Serving (no command, or ``serve``) prints one line on stdout with the base URL and the
``AIRFLOW_CONN_LOCALLEADS_DEFAULT`` to export, so a script can read the first line to learn the real port
when started with ``--port 0``. The key printed is the sandbox's own fake key, never a real one.

The other commands drive a sandbox that is already running, through :class:`SandboxClient` (so each is
the same control as in Python and over HTTP), and print its answer as JSON::

    python -m airflow_provider_localleads.sandbox spend 12 "Lead search: Dentists in Austin, TX"
    python -m airflow_provider_localleads.sandbox set-balance --used 95 --url http://127.0.0.1:8765
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any, get_type_hints

from airflow_provider_localleads.sandbox.client import SandboxClient, SandboxError
from airflow_provider_localleads.sandbox.faults import Fault
from airflow_provider_localleads.sandbox.server import DEFAULT_API_KEY, SandboxServer, is_loopback_host
from airflow_provider_localleads.sandbox.state import InsufficientCredits, SandboxState

API_KEY_ENV = "LOCALLEADS_SANDBOX_API_KEY"
#: Where the commands find a running sandbox unless ``--url`` says otherwise.
URL_ENV = "LOCALLEADS_SANDBOX_URL"
DEFAULT_URL = "http://127.0.0.1:8765"
PROG = "python -m airflow_provider_localleads.sandbox"

#: The commands against a running sandbox: command -> (the SandboxClient method, its arguments given by
#: position; the others are --options). Arguments, types, defaults and help come from the method.
COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "state": ("state", ()),
    "balance": ("balance", ()),
    "set-balance": ("set_balance", ()),
    "spend": ("spend", ("amount", "description")),
    "top-up": ("top_up", ("amount", "description")),
    "reset-month": ("reset_month", ()),
    "fail-next": ("fail_next", ()),
    "rate-limit-next": ("rate_limit_next", ()),
    "slow-next": ("slow_next", ("delay_seconds",)),
    "malformed-next": ("malformed_next", ("kind",)),
    "clear-faults": ("clear_faults", ()),
    "requests": ("requests", ()),
}


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
        prog=PROG,
        description="Serve a local simulator of the LocalLeads Credits API (and its /_sandbox/ controls). "
        f"To drive a running one: {PROG} COMMAND --help, COMMAND one of {', '.join(COMMANDS)}.",
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


def _value_type(hint: Any) -> type:
    """The type argparse converts a parameter's text to: its annotation's int or float, else str."""
    options = getattr(hint, "__args__", (hint,))
    return next((t for t in (int, float) if t in options), str)


def command_parser(command: str) -> argparse.ArgumentParser:
    """The parser of one command, built from its SandboxClient method's signature and docstring."""
    method_name, positional = COMMANDS[command]
    method = getattr(SandboxClient, method_name)
    hints = get_type_hints(method)
    parser = argparse.ArgumentParser(
        prog=f"{PROG} {command}",
        description=(inspect.getdoc(method) or "").split("\n\n")[0].split(" See :")[0],
        argument_default=argparse.SUPPRESS,  # what is not given keeps the method's default
    )
    parser.add_argument("--url", default=os.environ.get(URL_ENV, DEFAULT_URL), help=f"the sandbox (${URL_ENV})")
    for name, parameter in list(inspect.signature(method).parameters.items())[1:]:
        kind, default = _value_type(hints.get(name, str)), parameter.default
        shown = "" if default is parameter.empty else f" (default {default!r})"
        if name in positional:
            nargs = None if default is parameter.empty else "?"
            parser.add_argument(name, type=kind, nargs=nargs, help=f"{name}{shown}")
        else:
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, help=f"{name}{shown}")
    return parser


def run_command(command: str, argv: Sequence[str]) -> int:
    """Run one command against a running sandbox; print its answer as JSON (errors on stderr, exit 1)."""
    arguments = vars(command_parser(command).parse_args(argv))
    client = SandboxClient(arguments.pop("url"))
    try:
        result = getattr(client, COMMANDS[command][0])(**arguments)
    except (ValueError, KeyError, InsufficientCredits, SandboxError) as err:
        print(f"error: {err.args[0] if isinstance(err, KeyError) and err.args else err}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_json() if isinstance(result, Fault) else result, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return run_command(argv[0], argv[1:])
    parser = build_parser()
    if argv and argv[0] == "serve":
        argv = argv[1:]
    elif argv and not argv[0].startswith("-"):
        parser.error(f"unknown command {argv[0]!r}; the commands are serve (the default), {', '.join(COMMANDS)}")
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
    print(
        f"  drive it from another shell: {PROG} spend 12 --url {server.url}  (or top-up 100, set-balance --used 95, "
        f"reset-month, fail-next --status 503, state)\n"
        f"  or over HTTP: GET {server.url}/_sandbox/ lists the controls and their fields. Ctrl-C stops it.",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
