"""The one module that talks to python-consul2; swap the library here and nowhere else.

python-consul2 provides the transport (its requests session with TLS verification and
client certificates), builds URLs and wraps responses; this module sends each request
itself so that it, not the library, decides what each status means (the library hides a
409's JSON body inside an exception string and has no ``filter`` parameter) and so that a
time-out can be given per request.
Only a clean answer is data: a status the caller did not expect (a proxy's 404 or 407, a
429 rate limit, a 502), a body that is not the JSON Consul documents (an HTML page, a
truncated body) or JSON of the wrong shape raises, never reads as an empty catalogue.
The ACL token travels only in the X-Consul-Token header (never the query string, so it
cannot reach an access log) and never appears in a message.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec
import requests
import urllib3

from config.errors import ConfigError, RegistryError, TransientError
from config.events import emit

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import consul
    import consul.base


@dataclass(frozen=True)
class ConsulEndpoint:
    """Where and how to reach the Consul HTTP API (resolved from settings and CONSUL_*)."""

    address: str = "127.0.0.1:8500"
    token: str | None = None
    scheme: str | None = None
    verify: bool | str = True
    cert: tuple[str, str] | None = None
    datacenter: str | None = None
    timeout: float = 10.0

    def parts(self) -> tuple[str, str, int]:
        """(scheme, host, port) from ``host:port`` or ``scheme://host:port``."""
        raw = self.address if "://" in self.address else f"//{self.address}"
        try:
            split = urlsplit(raw)
            port = split.port
        except ValueError as exc:
            raise ConfigError(f"consul.address {self.address!r}: {exc}") from None
        scheme = split.scheme or self.scheme or "http"
        if scheme not in ("http", "https") or not split.hostname:
            raise ConfigError(
                f"consul.address {self.address!r}: expected host:port or http(s)://host:port"
            )
        return scheme, split.hostname, port or (443 if scheme == "https" else 8500)


@dataclass(frozen=True)
class Response:
    """``filtered``: Consul (1.11 and later) says ACLs removed something from the
    answer (X-Consul-Results-Filtered-By-ACLs): hidden from this token, not absent."""

    status: int
    index: int
    body: Any
    text: str
    filtered: bool = False


class ConsulClient:
    """``error`` is what failures raise: RegistryError for the registry, SourceError for
    the consul source, so each caller's failure isolation applies unchanged."""

    def __init__(
        self,
        endpoint: ConsulEndpoint,
        *,
        error: type[TransientError] = RegistryError,
    ) -> None:
        self.error = error
        self.endpoint = endpoint
        scheme, host, port = endpoint.parts()
        self.url = f"{scheme}://{host}:{port}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            client = consul.Consul(host=host, port=port, scheme=scheme)
        # The library lets CONSUL_HTTP_ADDR and CONSUL_HTTP_TOKEN override its arguments;
        # we resolved those ourselves, so rebuild its transport from our values only.
        client.token = None
        self._http = client.http_connect(
            host,
            port,
            scheme,
            verify=endpoint.verify,
            cert=endpoint.cert,
            timeout=endpoint.timeout,
        )
        self._headers = {"X-Consul-Token": endpoint.token} if endpoint.token else {}
        self._environment = _environment(self._http, self.url)
        if scheme == "https" and endpoint.verify is False:
            # The operator chose this (CONSUL_HTTP_SSL_VERIFY=false): say it once, not
            # in a urllib3 warning on every request.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            emit(
                logging.WARNING,
                "tls_verification_off",
                consul=self.url,
                reason="CONSUL_HTTP_SSL_VERIFY=false or consul.ssl_verify = false",
            )
        self._dc = endpoint.datacenter

    def get(
        self, path: str, params: dict[str, str] | None = None, timeout: float | None = None
    ) -> Response:
        raw = self._http.response(self._send("GET", path, params, None, timeout))
        return _response(raw, "GET", path, self.error)

    def read(
        self,
        path: str,
        shape: type[Shape],
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[Shape, int]:
        """A read whose only acceptable answer is 200 with a JSON body of ``shape``
        (list or dict): (body, X-Consul-Index). Anything else raises ``error``."""
        response = self.read_response(path, shape, params, timeout)
        return response.body, response.index

    def read_response(
        self,
        path: str,
        shape: type[Shape],
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """``read``, with the whole answer (its ACL-filtered flag)."""
        response = self.get(path, params, timeout)
        if response.status != 200:
            raise self.error(
                f"Consul answered GET {path} with {response.status} "
                f"({_excerpt(response.text)}); a read must answer 200"
            )
        if not isinstance(response.body, shape):
            raise self.error(
                f"Consul answered GET {path} with a JSON "
                f"{type(response.body).__name__}, expected a {shape.__name__}"
            )
        return response

    def read_as(
        self, path: str, into: type[Typed], params: dict[str, str] | None = None
    ) -> tuple[Typed, Response]:
        """``read_response`` decoding the body straight into ``into`` (a msgspec type
        naming only the fields the caller reads: the rest is skipped, not built). The
        answer keeps no copy of the text, and a body not of that shape raises
        ``error``, as any unclean answer does."""
        reply = self._send("GET", path, params, None, None)
        # A 200's body is decoded from its bytes: never held as text as well.
        raw = (
            consul.base.Response(200, reply.headers, "", reply.content)
            if reply.status_code == 200
            else self._http.response(reply)
        )
        response = _response(raw, "GET", path, self.error, into)
        if response.status != 200:
            raise self.error(
                f"Consul answered GET {path} with {response.status} "
                f"({_excerpt(response.text)}); a read must answer 200"
            )
        body: Typed = response.body
        return body, response

    def put(self, path: str, body: Any = None, params: dict[str, str] | None = None) -> Response:
        data = b"" if body is None else encode(body)
        raw = self._http.response(self._send("PUT", path, params, data, None))
        return _response(raw, "PUT", path, self.error)

    def close(self) -> None:
        self._http.session.close()

    def _send(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None,
        data: bytes | None,
        timeout: float | None,
    ) -> requests.Response:
        query = dict(params or {})
        if self._dc:
            query["dc"] = self._dc
        http = self._http
        try:
            # The library's session and URL builder (its response wrapper is the
            # caller's), with the time-out given per request: a blocking query's long
            # wait must not leak into other threads' requests through the shared client.
            reply: requests.Response = http.session.request(
                method,
                http.uri(path, query),
                data=data,
                headers=self._headers,
                timeout=timeout or http.timeout,
                **self._environment,
            )
        except requests.Timeout:
            raise self.error(
                f"Consul at {self.url} did not answer {method} {path} in time"
            ) from None
        except requests.RequestException as exc:
            raise self.error(f"cannot reach Consul at {self.url} ({type(exc).__name__})") from None
        return reply


def encode(body: Any) -> bytes:
    """A request body as compact JSON bytes, the one encoding of every body sent (so a
    size measured with it is the size sent). msgspec writes it several times faster than
    the json module; text it cannot write as UTF-8 (a lone surrogate) is written by the
    json module, escaped, as before."""
    try:
        return _ENCODER.encode(body)
    except UnicodeEncodeError:
        return json.dumps(body, separators=(",", ":")).encode("ascii")


_ENCODER = msgspec.json.Encoder()


def _environment(http: Any, url: str) -> dict[str, Any]:
    """What requests would take from the environment for ``url`` (HTTP(S)_PROXY and
    NO_PROXY, REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, ~/.netrc), asked once: the session
    otherwise asks on every request (about 0.75 ms each, a large part of a cold sync's
    client time), for an answer that is the same for every path of one Consul (it
    depends on the scheme and host only). The session then no longer looks; these are
    passed with each request."""
    session: requests.Session = http.session
    settings = session.merge_environment_settings(url, {}, None, http.verify, http.cert)
    auth = requests.utils.get_netrc_auth(url) if session.trust_env else None
    session.trust_env = False
    return {
        "proxies": settings["proxies"],
        "verify": settings["verify"],
        "cert": settings["cert"],
        "auth": auth,
    }


Shape = TypeVar("Shape", list[Any], dict[str, Any])
Typed = TypeVar("Typed")
FILTERED_BY_ACLS = "X-Consul-Results-Filtered-By-ACLs"

# Answers no Consul endpoint gives in capsync's use, whoever sends them: a rate limit,
# an authenticating proxy, a gateway. Never data, always the failure of that request.
_NOT_CONSUL = {401: "unauthorised", 407: "proxy authentication required", 429: "rate limited"}


def _response(
    raw: consul.base.Response,
    method: str,
    path: str,
    error: type[TransientError],
    into: type[Any] | None = None,
) -> Response:
    text = raw.body or ""
    retry_after = _retry_after(raw.headers.get("Retry-After"))
    if raw.code == 403:
        raise error(
            f"Consul refused {method} {path} (403): {_excerpt(text)}; check the ACL token's policy"
        )
    if raw.code in _NOT_CONSUL or raw.code >= 500:
        wait = f"; retry after {retry_after:g}s" if retry_after is not None else ""
        reason = _NOT_CONSUL.get(raw.code, "failed")
        raise error(
            f"Consul {reason} {method} {path} ({raw.code}): {_excerpt(text)}{wait}",
            retry_after=retry_after,
        )
    body = None
    if into is not None and raw.code == 200:
        body = _decode(raw.content, into, f"{method} {path}", error)
    elif raw.code in (200, 409) and text:
        try:
            body = _loads(raw.content, text)
        except ValueError:  # an HTML page, a truncated body
            raise error(
                f"Consul answered {method} {path} ({raw.code}) with a body that is "
                f"not JSON: {_excerpt(text)}"
            ) from None
    try:
        index = int(raw.headers.get("X-Consul-Index", "0") or 0)
    except ValueError:
        raise error(
            f"Consul answered {method} {path} with X-Consul-Index "
            f"{raw.headers.get('X-Consul-Index')!r}, not a number"
        ) from None
    filtered = raw.headers.get(FILTERED_BY_ACLS, "").lower() == "true"
    return Response(raw.code, index, body, text, filtered)


def _loads(content: bytes, text: str) -> Any:
    """A body as json.loads reads its text, at msgspec's speed (a 64-entry transaction's
    answer echoes every entry). Where the two differ (bytes that are not UTF-8, a lone
    surrogate escape, NaN, a number out of a float's range, a BOM) msgspec refuses, and
    json.loads reads the text as before, so the answer is always json.loads's."""
    try:
        return msgspec.json.decode(content)
    except msgspec.DecodeError:
        return json.loads(text)


def _decode(content: bytes, into: type[Any], request: str, error: type[TransientError]) -> Any:
    """A 200 answer's body as ``into``; an empty body, one that is not JSON, or JSON of
    another shape (named with where, as msgspec says it) raises ``error``."""
    try:
        return msgspec.json.decode(content, type=into)
    except msgspec.ValidationError as exc:
        raise error(f"Consul answered {request} with JSON of the wrong shape: {exc}") from None
    except msgspec.DecodeError:  # an HTML page, a truncated or empty body
        raise error(
            f"Consul answered {request} (200) with a body that is not JSON: "
            f"{_excerpt(content.decode('utf-8', 'replace'))}"
        ) from None


def _excerpt(text: str, limit: int = 200) -> str:
    """The start of a body, on one line: enough to recognise an HTML page or a message."""
    flat = " ".join(text.split())
    return flat[:limit] + ("..." if len(flat) > limit else "") if flat else "empty body"


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds, from either of its forms (seconds or an HTTP date)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
