"""One CA trust for the worker (requests) and the triggerer (httpx): each reads different variables, so
left alone a company CA set one way would make a sensor work in poke mode and fail deferred.
"""

from __future__ import annotations

import os
import ssl
from functools import lru_cache

from airflow_provider_localleads.exceptions import LocalLeadsConfigurationError

#: Where a CA bundle may be named, in the order they win.
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")


def checked_ca_bundle() -> str | None:
    """The CA bundle path (None for certifi's), checked: a wrong one would otherwise fail the first
    request, differently in each path, without naming the variable to fix."""
    for name in CA_BUNDLE_VARIABLES:
        path = os.environ.get(name, "").strip()
        if path:
            break
    else:
        return None
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
    """Built once per CA bundle in the process: loading one costs 25-50 ms of CPU."""
    return _ssl_context_for(checked_ca_bundle())


@lru_cache(maxsize=4)
def _ssl_context_for(ca_bundle: str | None) -> ssl.SSLContext:
    if ca_bundle is None:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    if os.path.isdir(ca_bundle):
        return ssl.create_default_context(capath=ca_bundle)
    return ssl.create_default_context(cafile=ca_bundle)
