"""The REST client behind the ``ipam`` commands that talk to a running service.

Where the service is: ``--url``, else ``IPAM_URL``, else the service ``ipam serve`` would start
with the same environment (``http://IPAM_HOST:IPAM_PORT``, a wildcard host read as
``127.0.0.1``; ``http://127.0.0.1:9040`` when neither is set), so the quickstart needs no
configuration.

The bearer token: ``--token``, else ``--token-file``, else ``IPAM_TOKEN``, else
``IPAM_TOKEN_FILE`` (a file holding the token alone, such as a mounted Secret key). No token:
no ``Authorization`` header, which a service without a token file accepts.

Every failure is one ``CliError`` (``ipam.cli.exits``): a message a person can act on, on one
line, and the process's exit code. HTTP errors map as: 400/413/422 -> ``INVALID``,
401/403 -> ``AUTH``, 404 -> ``NOT_FOUND`` (a path the service does not serve ->
``UNAVAILABLE``: that URL is not this API), 409 -> ``CONFLICT``, 502/503/504 and connection
failures -> ``UNAVAILABLE``, anything else -> ``ERROR``.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from ipam import __version__
from ipam.cli.exits import CliError, ExitCode, exit_code_for_status, one_line

DEFAULT_PORT = 9040
#: Largest page the API serves (``limit`` of ``/v1/addresses`` and ``/v1/audit``).
MAX_PAGE = 1000


def _local_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::", "[::]"):  # noqa: S104 - reading, not listening
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def default_url(env: Mapping[str, str]) -> str:
    """``IPAM_URL``, else where ``ipam serve`` listens with this environment."""
    url = env.get("IPAM_URL", "").strip()
    if url:
        return url
    port = env.get("IPAM_PORT", "").strip() or str(DEFAULT_PORT)
    return f"http://{_local_host(env.get('IPAM_HOST', '').strip())}:{port}"


def _token_from_file(path: Path, source: str) -> str:
    try:
        text = path.read_text()
    except OSError as exc:
        raise CliError(f"cannot read the token file {path} ({source}): {exc.strerror}",
                       ExitCode.INVALID) from None
    token = text.strip()
    if not token or any(c.isspace() for c in token):
        raise CliError(f"the token file {path} ({source}) must hold one token and nothing else",
                       ExitCode.INVALID)
    return token


@dataclass(frozen=True)
class Connection:
    """Where the service is and how to authenticate to it."""

    url: str
    token: str | None = field(default=None, repr=False)
    timeout: float = 30.0

    @classmethod
    def resolve(cls, *, url: str | None = None, token: str | None = None,
                token_file: Path | None = None, timeout: float = 30.0,
                env: Mapping[str, str] | None = None) -> Connection:
        """Flags first, then the environment (see the module docstring)."""
        env = os.environ if env is None else env
        base = (url or "").strip() or default_url(env)
        if not re.match(r"^https?://[^/\s]+", base):
            raise CliError(f"the service URL {base!r} is not http(s)://host[:port] (set --url "
                           "or IPAM_URL)", ExitCode.INVALID)
        if token:
            secret: str | None = token.strip()
        elif token_file is not None:
            secret = _token_from_file(token_file, "--token-file")
        elif env.get("IPAM_TOKEN", "").strip():
            secret = env["IPAM_TOKEN"].strip()
        elif env.get("IPAM_TOKEN_FILE", "").strip():
            secret = _token_from_file(Path(env["IPAM_TOKEN_FILE"].strip()), "IPAM_TOKEN_FILE")
        else:
            secret = None
        return cls(base.rstrip("/"), secret, timeout)


def path_segment(value: str) -> str:
    """``value`` as one URL path segment (addresses, names)."""
    return quote(value, safe="")


class ApiClient:
    """Synchronous calls to the REST API; every failure raises ``CliError``."""

    def __init__(self, connection: Connection,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.connection = connection
        headers = {"User-Agent": f"ipam-cli/{__version__}", "Accept": "application/json"}
        if connection.token:
            headers["Authorization"] = f"Bearer {connection.token}"
        self._http = httpx.Client(base_url=connection.url, headers=headers,
                                  timeout=connection.timeout, transport=transport)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, *, params: Mapping[str, Any] | None = None,
             json: Any = None, content: str | None = None,
             content_type: str | None = None, timeout: float | None = None) -> Any:
        return self.request("POST", path, params=params, json=json, content=content,
                            content_type=content_type, timeout=timeout)

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json: Any = None, content: str | None = None,
                content_type: str | None = None, timeout: float | None = None) -> Any:
        """The decoded JSON answer of a 2xx response."""
        headers = {"X-Request-Id": f"cli-{uuid.uuid4().hex[:16]}"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(
                method, path, params=query, json=json, content=content, headers=headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.TimeoutException:
            raise CliError(f"the ipam service at {self.connection.url} did not answer "
                           f"{method} {path} in time; it may be overloaded or its database "
                           "slow (raise --timeout?)", ExitCode.UNAVAILABLE) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise CliError(f"the service URL {self.connection.url!r} is unusable: {exc}",
                           ExitCode.INVALID) from None
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the ipam service at {self.connection.url} "
                           f"({_reason(exc)}); is it running? (set --url or IPAM_URL)",
                           ExitCode.UNAVAILABLE) from None
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise CliError(f"{method} {path} answered {response.status_code} with a body "
                               "that is not JSON; is the URL an ipam service?",
                               ExitCode.ERROR) from None
        raise self._error(method, path, response)

    def _error(self, method: str, path: str, response: httpx.Response) -> CliError:
        status = response.status_code
        try:
            envelope = response.json()["error"]
            code, message = str(envelope["code"]), str(envelope["message"])
            details = envelope.get("details") or {}
        except (ValueError, KeyError, TypeError):
            text = one_line(response.text)[:200] or response.reason_phrase
            return CliError(f"{method} {path} at {self.connection.url} answered: {text} "
                            "(is the URL an ipam service?)", _non_api_exit(status),
                            status=status, code="http_error")
        if code == "route_not_found":
            return CliError(f"{self.connection.url} does not serve {method} {path}: not an "
                            "ipam service, or an older version", ExitCode.UNAVAILABLE,
                            status=status, code=code)
        if status == 401:
            message += "; pass --token or --token-file, or set IPAM_TOKEN or IPAM_TOKEN_FILE"
        if status >= 500 and status not in (502, 503, 504):
            rid = response.headers.get("x-request-id")
            if rid:
                message += f"; the service's log has request id {rid}"
        return CliError(message, exit_code_for_status(status), status=status, code=code,
                        details=details if isinstance(details, dict) else {})

    def list_all(self, path: str, params: Mapping[str, Any], *, limit: int | None,
                 cursor: str | None = None) -> Listing:
        """Items of a keyset-paginated list, following ``next_cursor``; at most ``limit``,
        from ``cursor`` (a ``next_cursor`` the API gave) when there is one."""
        out = Listing()
        while True:
            remaining = None if limit is None else limit - len(out.items)
            size = MAX_PAGE if remaining is None else min(remaining, MAX_PAGE)
            page = self.get(path, {**params, "limit": size, "cursor": cursor})
            items: list[dict[str, Any]] = page["items"]
            out.items.extend(items)
            cursor = page.get("next_cursor")
            if not cursor or not items:
                return out
            if limit is not None and len(out.items) >= limit:
                out.next_cursor = cursor
                return out

    def server_version(self) -> str:
        """The service's version, from its OpenAPI document."""
        spec = self.get("/openapi.json")
        try:
            return str(spec["info"]["version"])
        except (KeyError, TypeError):
            raise CliError(f"{self.connection.url}/openapi.json has no info.version; is the "
                           "URL an ipam service?", ExitCode.ERROR) from None


@dataclass
class Listing:
    """What ``list_all`` collected; ``next_cursor``: where the next page starts, when the limit
    stopped it before the last page (None: these were the last items)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    next_cursor: str | None = None

    @property
    def more(self) -> bool:
        return self.next_cursor is not None


def _param(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _non_api_exit(status: int) -> ExitCode:
    """A status from something that is not the API (a proxy, another server)."""
    if status == 404:
        return ExitCode.UNAVAILABLE
    return exit_code_for_status(status)


def _reason(exc: httpx.TransportError) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    text = one_line(str(exc))
    return text or type(exc).__name__
