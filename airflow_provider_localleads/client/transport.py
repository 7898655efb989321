"""One HTTP attempt, synchronous (requests) and asynchronous (httpx): one GET to an :class:`Answer`
(body capped at ``MAX_BODY_BYTES``) or a LocalLeadsError, through ONE error map (:func:`_low_level`).

No public interface of requests or urllib3 bounds a whole request: a sync head dripped byte by byte is
bounded per read only (docs/reliability.md: Airflow's ``execution_timeout`` bounds that).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import ssl
import time
import zlib
from collections.abc import Iterator, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

import requests
import urllib3

from airflow_provider_localleads import __version__
from airflow_provider_localleads.client.responses import MAX_BODY_BYTES
from airflow_provider_localleads.client.secrets import BearerAuth, exception_chain, strip_requests
from airflow_provider_localleads.client.settings import ConnectionSettings, is_loopback
from airflow_provider_localleads.client.tls import checked_ca_bundle, shared_ssl_context
from airflow_provider_localleads.client.values import excerpt
from airflow_provider_localleads.exceptions import (
    LocalLeadsConnectionError,
    LocalLeadsError,
    LocalLeadsResponseError,
    LocalLeadsTLSError,
)

if TYPE_CHECKING:
    import httpx

USER_AGENT = f"airflow-provider-localleads/{__version__}"
Params = Mapping[str, str | int] | None
_READ_CHUNK = 65536
#: What OpenSSL says when the other side answered a TLS hello in plain text (an http:// server).
_PLAIN_HTTP_REASONS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"})


class Answer(NamedTuple):
    status: int
    headers: Mapping[str, str]
    body: bytes


def open_session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    session.headers["Accept"] = "application/json"
    session.verify = checked_ca_bundle() or True  # the same CA bundle as the async path
    return session


def open_async_client() -> httpx.AsyncClient:
    """The key is set per request, never on the client; bodies are asked for uncompressed (:class:`_BoundedBody`)."""
    import httpx

    return httpx.AsyncClient(
        headers={"User-Agent": USER_AGENT, "Accept": "application/json", "Accept-Encoding": "identity"},
        follow_redirects=False,
        verify=shared_ssl_context(),
    )


class _Progress:
    """How far an attempt got, for the error message: still connecting, or reading the answer."""

    def __init__(self) -> None:
        self.reading = False


def send(session: requests.Session, settings: ConnectionSettings, path: str, params: Params, budget: float) -> Answer:
    """One synchronous GET within ``budget`` seconds of wall clock, save a head dripped byte by byte."""
    budget = min(budget, settings.connect_timeout + settings.read_timeout)
    ends = time.monotonic() + budget
    with (
        _mapped_errors(settings, path, budget, where="this worker") as progress,
        session.get(
            settings.base_url + path,
            params=params,
            auth=BearerAuth(settings.api_key),
            timeout=(min(settings.connect_timeout, budget), min(settings.read_timeout, budget)),
            allow_redirects=False,
            stream=True,
        ) as response,
    ):
        progress.reading = True
        return Answer(response.status_code, response.headers, _read_body(response, path, ends))


async def asend(
    client: httpx.AsyncClient, settings: ConnectionSettings, path: str, params: Params, budget: float
) -> Answer:
    """One asynchronous GET, bounded by ``budget`` seconds of wall clock (``asyncio.timeout``)."""
    import httpx

    budget = min(budget, settings.connect_timeout + settings.read_timeout)
    timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
    with _mapped_errors(settings, path, budget, where="the triggerer") as progress:
        async with asyncio.timeout(budget):
            request = client.build_request("GET", settings.base_url + path, params=params, timeout=timeout)
            request.headers["Authorization"] = f"Bearer {settings.api_key}"
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                progress.reading = True
                body = _BoundedBody(response.headers, path, response.status_code, raw=True)
                async for raw in response.aiter_raw():
                    body.feed(raw)
                body.finish()
            finally:
                await response.aclose()
        return Answer(response.status_code, response.headers, body.value())


def _read_body(response: requests.Response, path: str, ends: float) -> bytes:
    """Read the body by ``ends`` (monotonic): each wait is cut to the time left through the public
    ``HTTPResponse.connection.sock`` (urllib3 sets its timeout again when it reuses the socket), so a
    body dripped a byte a second ends on time."""
    body = _BoundedBody(response.headers, path, response.status_code, raw=False)
    raw = response.raw
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    per_read = sock.gettimeout() if sock is not None else None
    while (left := ends - time.monotonic()) > 0:
        if sock is not None:
            with contextlib.suppress(OSError):  # closed under us: the read below says how
                sock.settimeout(min(per_read or left, left))
        # read1 returns what has arrived instead of waiting for a full chunk (and bounds what one call
        # may decompress), so the cap applies as bytes arrive. requests opens the raw stream with
        # decoding off; iter_content would turn it on, so do we. urllib3 < 2 has only read.
        read = raw.read1 if hasattr(raw, "read1") else raw.read
        chunk = read(_READ_CHUNK, decode_content=True)
        if not chunk:
            return body.value()
        body.feed(chunk)
    raise TimeoutError("the attempt's time ran out while the body was being read")


class _BoundedBody:
    """Collects a body, refusing one over ``MAX_BODY_BYTES``, announced or received.

    Sync bodies arrive decoded by urllib3. Async ones arrive ``raw``: the client asks for
    ``identity``, a server that compresses anyway is inflated here at most ``MAX_BODY_BYTES + 1``
    bytes at a time (httpx would inflate a whole network chunk at once), other encodings are refused.
    """

    def __init__(self, headers: Mapping[str, str], path: str, status: int, *, raw: bool) -> None:
        self._path, self._status = path, status
        self._chunks: list[bytes] = []
        self._size = 0
        declared = (headers.get("Content-Length") or "").strip()
        if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise self._error(f"The LocalLeads API announced a {int(declared)}-byte answer, more than")
        encoding = (headers.get("Content-Encoding") or "").strip().lower() if raw else ""
        self._inflate: Any = None
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._inflate = zlib.decompressobj(wbits=47)  # zlib or gzip header, detected
        elif encoding not in ("", "identity"):
            raise LocalLeadsResponseError(
                f"The LocalLeads API answered with Content-Encoding {excerpt(encoding, str, 40)!r}, which this "
                "provider does not decode (it asks for identity); check the connection's host or proxy",
                path=path,
                status_code=status,
            )

    def _error(self, what: str) -> LocalLeadsResponseError:
        return LocalLeadsResponseError(
            f"{what} the {MAX_BODY_BYTES} bytes this provider reads; check the connection's host",
            path=self._path,
            status_code=self._status,
        )

    def _add(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_BODY_BYTES:
            raise self._error("The LocalLeads API answer is larger than")
        self._chunks.append(data)

    def feed(self, raw: bytes) -> None:
        if self._inflate is None:
            self._add(raw)
            return
        pending = raw
        while pending:
            self._add(self._inflate.decompress(pending, MAX_BODY_BYTES + 1 - self._size))
            pending = self._inflate.unconsumed_tail

    def finish(self) -> None:
        if self._inflate is not None:
            self._add(self._inflate.flush())

    def value(self) -> bytes:
        return b"".join(self._chunks)


@cache
def _low_level() -> tuple[tuple[tuple[type[BaseException], ...], str, bool], ...]:
    """(types, kind, whether the whole chain counts) per kind; first row wins. Built on first failure:
    it imports httpx, which a synchronous worker need not load.

    Timeouts are judged by the exception raised only: urllib3 2's NewConnectionError is a
    ConnectTimeoutError too, so a refused connection chained under requests' must not count as one.
    """
    import httpx

    timeouts = (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError, httpx.TimeoutException)
    tls = (ssl.SSLError, ssl.CertificateError, requests.exceptions.SSLError, urllib3.exceptions.SSLError)
    broken = (
        requests.exceptions.RequestException,
        urllib3.exceptions.HTTPError,
        http.client.HTTPException,
        httpx.RequestError,
        zlib.error,
        OSError,
    )
    return ((timeouts, "timeout", False), (tls, "tls", True), (broken, "broken", False))


def _classify(err: BaseException) -> str | None:
    for types, kind, whole_chain in _low_level():
        if any(isinstance(e, types) for e in (exception_chain(err) if whole_chain else (err,))):
            return kind
    return None


@contextlib.contextmanager
def _mapped_errors(settings: ConnectionSettings, path: str, budget: float, *, where: str) -> Iterator[_Progress]:
    progress = _Progress()
    try:
        yield progress
    except LocalLeadsError:
        raise
    except Exception as err:
        kind = _classify(err)
        if kind is None:
            raise
        strip_requests(err)
        raise _transport_error(err, kind, settings, path, budget, reading=progress.reading, where=where) from err


def _transport_error(
    err: BaseException, kind: str, settings: ConnectionSettings, path: str, budget: float, *, reading: bool, where: str
) -> LocalLeadsError:
    name, url = type(err).__name__, settings.base_url
    if kind == "timeout" and reading:
        message = (
            f"The LocalLeads API at {url} sent its answer too slowly and the request ran out of time "
            f"({budget:.1f} s, {name}); it may be overloaded, or a proxy is stalling"
        )
    elif kind == "timeout":
        message = (
            f"The LocalLeads API at {url} did not answer within {budget:.1f} s ({name}); it may be overloaded "
            f"or unreachable from {where}"
        )
    elif kind == "tls" and not reading:
        return LocalLeadsTLSError(
            f"TLS to {url} failed ({name}); check the host name and the certificate, or the CA bundle "
            "(REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, SSL_CERT_FILE or SSL_CERT_DIR on workers and triggerer)"
            + _plain_http_hint(err, settings),
            path=path,
        )
    elif reading:
        message = (
            f"The connection to the LocalLeads API at {url} broke while the answer was being read ({name}: "
            "the body was cut short or reset); this is usually temporary"
        )
    else:
        message = (
            f"Could not reach the LocalLeads API at {url}, or it hung up without answering ({name}); check the "
            f"connection's host and that {where} can reach it (DNS, firewall, proxy)"
        )
    return LocalLeadsConnectionError(message, path=path)


def _plain_http_hint(err: BaseException, settings: ConnectionSettings) -> str:
    """How to use http, when the server seems to speak it (or is on loopback, like the sandbox)."""
    host = urlsplit(settings.base_url).hostname or ""
    speaks_http = any(getattr(e, "reason", None) in _PLAIN_HTTP_REASONS for e in exception_chain(err))
    if not (speaks_http or is_loopback(host)):
        return ""
    seen = "answers plain http, not https" if speaks_http else "is on this machine and may serve plain http"
    return (
        f". The server {seen}: if that is intended (a local sandbox, a trusted private network), set the "
        "connection's schema to http (URI form: localleads://:<API key>@host:port/http) or write http:// in "
        "its host; a host that is not loopback also needs the extra allow_insecure_http"
    )
