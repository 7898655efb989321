"""TLS material, a sync/async call switch and leak probes for the reliability tests.

The loopback servers themselves (:class:`loopback_support.RawServer`, optionally TLS-wrapped with
:func:`self_signed_server_context`) are shared with the integration suite in ``loopback_support``.

The probes look at what a failure may leave behind: connections checked out of urllib3's or
httpx's pools, open file descriptors.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import ssl
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from airflow_provider_localleads.hooks.localleads import LocalLeadsHook
from airflow_provider_localleads.models import CreditBalance


def self_signed_server_context(cert_out: str | None = None) -> ssl.SSLContext:
    """A server-side TLS context with a fresh self-signed certificate for 127.0.0.1.

    Untrusted unless the test trusts it: ``cert_out`` receives the certificate (PEM) to name as a CA bundle.
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localleads-reliability-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
    if cert_out is not None:
        with open(cert_out, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
    return context


def call(hook: LocalLeadsHook, mode: str) -> CreditBalance:
    """``get_balance`` (``mode="sync"``) or ``aget_balance`` in a fresh event loop (``"async"``)."""
    if mode == "sync":
        return hook.get_balance()
    import asyncio

    return asyncio.run(hook.aget_balance())


# -------------------------------------------------------------------------------------------- probes


def sync_pools(hook: LocalLeadsHook) -> list[Any]:
    """Every urllib3 connection pool the hook's session has created (direct and via proxies)."""
    pools: list[Any] = []
    session = hook.__dict__.get("session")
    if session is None:
        return pools
    for adapter in session.adapters.values():
        managers = [adapter.poolmanager, *adapter.proxy_manager.values()]
        for manager in managers:
            pools.extend(manager.pools._container.values())
    return pools


def sync_checked_out(hook: LocalLeadsHook) -> int:
    """Connections taken out of the hook's urllib3 pools and not given back.

    A pool's LIFO queue starts with ``maxsize`` slots (``None`` or an idle connection); taking a
    connection removes a slot until it is put back, so a pool at rest has ``qsize() == maxsize``.
    """
    return sum(pool.pool.maxsize - pool.pool.qsize() for pool in sync_pools(hook))


def async_pool_busy(client: Any) -> tuple[int, int]:
    """(requests in flight, connections neither idle nor closed) in an httpx client's connection pool."""
    pool = client._transport._pool
    active = [c for c in pool.connections if not (c.is_idle() or c.is_closed())]
    return len(pool._requests), len(active)


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


@contextlib.contextmanager
def no_leftovers(slack_fds: int = 0) -> Iterator[None]:
    """Assert that the block leaves no extra open file descriptor behind.

    Hooks and clients used in the block must be closed inside it; servers stopped outside it.
    """
    before = open_fds()
    yield
    deadline = time.monotonic() + 2
    leaked = open_fds() - before
    # Descriptors the block opened may still be closing in another thread (a server's handler).
    while len(leaked) > slack_fds and time.monotonic() < deadline:
        time.sleep(0.02)
        leaked = open_fds() - before
    assert len(leaked) <= slack_fds, f"file descriptors left open: {sorted(leaked)}"
