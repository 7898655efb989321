"""Which CA certificates the provider trusts, the same for the worker (requests) and the triggerer (httpx).

requests reads ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, httpx ``SSL_CERT_FILE``/``SSL_CERT_DIR``:
left alone, a company CA set one way would make a sensor work in poke mode and fail deferred. Both
paths use :func:`ca_bundle_from_env` (requests' variables first, then OpenSSL's; else certifi's).
A bundle costs 25-50 ms of CPU to load, so it is loaded once per process (:func:`shared_ssl_context`).
"""

from __future__ import annotations

import os
import ssl
from functools import lru_cache

from airflow_provider_localleads.exceptions import LocalLeadsConfigurationError

#: Where a CA bundle may be named, in the order they win.
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")


def ca_bundle_from_env() -> tuple[str, str] | None:
    """``(variable, path)`` of the CA bundle (file or directory) the environment names, or None."""
    for name in CA_BUNDLE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return name, value
    return None


def checked_ca_bundle() -> str | None:
    """The CA bundle path from the environment (None for certifi's), after checking it loads.

    A wrong path or a file without certificates would otherwise fail the first request, differently
    in each path; this names the variable to fix.
    """
    found = ca_bundle_from_env()
    if found is None:
        return None
    name, path = found
    if not os.path.exists(path):
        raise LocalLeadsConfigurationError(
            f"The CA bundle named by the environment variable {name} does not exist: {path!r}. Fix the path "
            f"on the workers and the triggerer, or unset {name} to trust the default (certifi) certificates"
        )
    try:
        _ssl_context_for(path)
    except (OSError, ssl.SSLError) as err:
        raise LocalLeadsConfigurationError(
            f"The CA bundle named by the environment variable {name} cannot be loaded: {path!r} "
            f"({type(err).__name__}: {err}); it must hold PEM certificates. Fix it on the workers and the "
            f"triggerer, or unset {name} to trust the default (certifi) certificates"
        ) from err
    return path


def shared_ssl_context() -> ssl.SSLContext:
    """The verifying ``SSLContext`` for httpx clients, built once per CA bundle in the process."""
    return _ssl_context_for(checked_ca_bundle())


@lru_cache(maxsize=4)
def _ssl_context_for(ca_bundle: str | None) -> ssl.SSLContext:
    if ca_bundle is None:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    if os.path.isdir(ca_bundle):
        return ssl.create_default_context(capath=ca_bundle)
    return ssl.create_default_context(cafile=ca_bundle)
