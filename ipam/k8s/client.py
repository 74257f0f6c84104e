"""The Kubernetes API transport: every request on one aiohttp session on the event loop.

The official client is kept for what it does well, configuration and credentials: in-cluster
or kubeconfig loading, the TLS files, and ``param_serialize``, which builds each request's URL
and headers with the bearer token its refresh hook re-reads. Its synchronous transport
(urllib3) is not used: through a thread pool a Binding POST cost ~0.6 ms of CPU and two GIL
hand-offs, on aiohttp ~0.15 ms. The same move for reads, paged lists and watches took a GET
from 0.57 to 0.23 ms of CPU (0.13 ms 32 at a time), a watch event from 0.128 to 0.108 ms, the
process from 36 threads to 1 and 123 to 104 MB resident with three informers; a 500-node list
page stays ~20 ms, which is JSON parsing (docs/benchmarks.md, "Kubernetes transport (session
4)").
Answers are parsed with orjson, not the client's slow models, which cannot even parse
the Status a Binding answers with (kubernetes-client/python#547).

Failures, mapped once here: no answer, a timeout, 429 and 5xx are ``Unavailable`` (worth
retrying); any other non-2xx answer is ``ApiStatusError`` with its status and Status reason.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from kubernetes import client, config

from ipam.errors import Unavailable
from ipam.settings import Settings

if TYPE_CHECKING:
    import aiohttp

#: Connections to the API server, watches included; requests beyond wait for one.
MAX_CONNECTIONS = 100
#: A watch stream may stay silent this much longer than the ``timeoutSeconds`` it asked for
#: before it is taken for dead (the client-side read timeout).
WATCH_READ_GRACE = 30


class ApiStatusError(Exception):
    """A non-2xx answer from the API server, with its status and Status reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def configuration(settings: Settings) -> client.Configuration:
    cfg = client.Configuration()
    if settings.kube_api_url:
        cfg.host = settings.kube_api_url.rstrip("/")
    elif settings.kubeconfig is not None:
        config.load_kube_config(config_file=str(settings.kubeconfig), client_configuration=cfg)
    else:
        config.load_incluster_config(client_configuration=cfg)
    return cfg


class KubeClient:
    def __init__(self, cfg: client.Configuration, *,
                 timeout: tuple[float, float] = (3.0, 10.0),
                 connections: int = MAX_CONNECTIONS) -> None:
        # No generated API classes (CoreV1Api ...): they validate every call with pydantic
        # and building them imported ~400 methods and their models, 0.6-0.9 s of CPU at start.
        self.api_client = client.ApiClient(cfg)
        self.cfg = cfg
        #: (connect, read) seconds; the read timeout is per read, not for the whole answer.
        self.timeout = timeout
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._closing: Any = None  # ``close``'s task, referenced until it is done

    @classmethod
    def from_settings(cls, settings: Settings) -> KubeClient:
        return cls(configuration(settings), timeout=settings.kube_timeout_seconds)

    def _http(self) -> aiohttp.ClientSession:
        import aiohttp  # on first use: importing it builds SSL contexts (~0.1 s at start)

        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.connections, ssl=_ssl_context(self.cfg))
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(sock_connect=self.timeout[0],
                                              sock_read=self.timeout[1]),
                # Like the official client: no compression. The API server would gzip a
                # large list, and both ends pay the CPU on what is usually a fast network.
                skip_auto_headers=("Accept-Encoding",))
        return self._session

    def _request(self, method: str, path: str, params: Mapping[str, str] | None,
                 headers: dict[str, str]) -> tuple[Any, dict[str, str]]:
        """URL and headers from the official client: server, query encoding, credentials
        (the in-cluster token re-read by its refresh hook)."""
        from yarl import URL

        _, url, headers, _, _ = self.api_client.param_serialize(
            method, path, query_params=list((params or {}).items()), header_params=headers,
            auth_settings=["BearerToken"])
        return URL(url, encoded=True), headers

    async def _send(self, method: str, path: str, params: Mapping[str, str] | None = None,
                    body: bytes | None = None) -> Any:
        import aiohttp

        session = self._http()
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        url, headers = self._request(method, path, params, headers)
        try:
            async with session.request(method, url, data=body, headers=headers,
                                       server_hostname=self.cfg.tls_server_name) as response:
                data = await response.read()
                status = response.status
                reason = response.reason or ""
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Unavailable(f"Kubernetes API unreachable: {type(exc).__name__}") from exc
        if status >= 300:
            raise _status_error(status, reason, data)
        return orjson.loads(data) if data else None

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET one object or one list page (query ``params`` under their API names:
        ``limit``, ``continue``, ``fieldSelector`` ...); its decoded JSON."""
        return await self._send("GET", path, params)

    async def post(self, path: str, body: bytes) -> Any:
        """POST a JSON ``body``; the decoded JSON answer."""
        return await self._send("POST", path, body=body)

    async def watch(self, path: str, params: Mapping[str, str] | None = None, *,
                    timeout_seconds: int) -> AsyncGenerator[dict[str, Any], None]:
        """The events of one watch stream of ``path`` (``watch=true`` is added), decoded,
        until the API server ends it (after ``timeout_seconds``, which it is asked for).

        Close it with ``contextlib.aclosing`` (or cancel the task reading it): the stream's
        connection is closed at once, not returned to the pool. A refused watch raises like
        ``get``; a broken stream, a silence of ``timeout_seconds + WATCH_READ_GRACE`` or a
        line that is not JSON raise ``Unavailable``.
        """
        import aiohttp

        session = self._http()
        query = {**(params or {}), "watch": "true", "timeoutSeconds": str(timeout_seconds)}
        url, headers = self._request("GET", path, query, {"Accept": "application/json"})
        timeout = aiohttp.ClientTimeout(sock_connect=self.timeout[0],
                                        sock_read=timeout_seconds + WATCH_READ_GRACE)
        try:
            response = await session.get(url, headers=headers, timeout=timeout,
                                         server_hostname=self.cfg.tls_server_name)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Unavailable(f"Kubernetes API unreachable: {type(exc).__name__}") from exc
        ended = False
        try:
            if response.status >= 300:
                try:
                    data = await response.read()
                except (aiohttp.ClientError, OSError, TimeoutError):
                    data = b""
                raise _status_error(response.status, response.reason or "", data)
            # Lines are split here, not with ``readline``: its cap (128 KiB) is below the
            # size of one event for a large object (a ConfigMap holds up to 1 MiB).
            partial: list[bytes] = []
            while True:
                try:
                    chunk = await response.content.readany()
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    raise Unavailable(f"watch stream broke: {type(exc).__name__}: {exc}"
                                      ) from exc
                if not chunk:
                    break
                if b"\n" not in chunk:
                    partial.append(chunk)
                    continue
                if partial:
                    partial.append(chunk)
                    chunk = b"".join(partial)
                    partial.clear()
                *lines, rest = chunk.split(b"\n")
                if rest:
                    partial.append(rest)
                for line in lines:
                    if line.strip():
                        yield _event(line)
            tail = b"".join(partial)
            if tail.strip():
                yield _event(tail)
            ended = True
        finally:
            if ended:
                response.release()  # read to the end: the connection can be reused
            else:
                response.close()  # cancelled, abandoned or broken: drop the connection

    async def aclose(self) -> None:
        """Close the event loop's HTTP session (open watches with it) and the client."""
        if self._session is not None:
            await self._session.close()
        self.api_client.close()

    def close(self) -> None:
        """``aclose`` for callers that cannot await (and opened no session).

        With a session open, its closing is started on the running loop; ``aclose`` waits for
        it instead, and is what a coroutine should call.
        """
        import asyncio

        session, self._session = self._session, None
        if session is not None and not session.closed:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop: the session's connections went with it
                pass
            else:
                self._closing = loop.create_task(session.close())
        self.api_client.close()


def _event(line: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise Unavailable(f"watch stream sent a line that is not JSON: {exc}") from exc
    if not isinstance(event, dict):
        raise Unavailable(f"watch stream sent {type(event).__name__}, not an event object")
    return event


def _ssl_context(cfg: client.Configuration) -> ssl.SSLContext | bool:
    if not cfg.host.startswith("https"):
        return False
    context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    if cfg.cert_file:
        context.load_cert_chain(cfg.cert_file, cfg.key_file)
    if not cfg.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _status_error(status: int, reason: str, content: bytes | str | None) -> Exception:
    """A non-2xx answer: Unavailable when worth retrying, else its status and Status reason."""
    message = ""
    if content:
        try:
            body = orjson.loads(content)
            reason = str(body.get("reason") or reason)
            message = str(body.get("message") or "")
        except (orjson.JSONDecodeError, AttributeError):
            text = content.decode(errors="replace") if isinstance(content, bytes) else content
            message = text[:200]
    if status >= 500 or status in (0, 429):
        return Unavailable(f"Kubernetes API answered {status} {reason}: {message}".strip(),
                           status=status)
    return ApiStatusError(status, reason, message)
