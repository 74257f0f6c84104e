"""The Kubernetes API client, and the thread pool its blocking calls run in.

The official client is synchronous (urllib3). Every call goes through ``KubeClient.call`` so
it never blocks the event loop, and through one bounded pool sized for bind concurrency.
Responses are read raw (``_preload_content=False``) and parsed with orjson: the client's model
deserialisation is slow, and ``create_namespaced_binding`` cannot parse the Status the API
server answers with at all (kubernetes-client/python#547).

The one call on the scheduler's hot path, POSTing a Binding, goes over aiohttp on the event
loop instead, with the same configuration (server, TLS, credentials): through the thread
pool it cost ~0.6 ms of CPU and two GIL hand-offs per bind, on aiohttp ~0.15 ms.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ipam.errors import Unavailable
from ipam.settings import Settings

if TYPE_CHECKING:
    import aiohttp

T = TypeVar("T")


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
    def __init__(self, cfg: client.Configuration, *, threads: int = 32,
                 timeout: tuple[float, float] = (3.0, 10.0)) -> None:
        cfg.connection_pool_maxsize = max(threads, 4)
        # No generated API classes (CoreV1Api ...): they validate every call with pydantic
        # and building them imported ~400 methods and their models, 0.6-0.9 s of CPU at start.
        # Reads, lists and watches go through ``getter``.
        self.api_client = client.ApiClient(cfg)
        self.cfg = cfg
        self.timeout = timeout
        self.threads = threads
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kube")
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KubeClient:
        return cls(configuration(settings), threads=settings.kube_threads,
                   timeout=settings.kube_timeout_seconds)

    def getter(self, path: str) -> Callable[..., Any]:
        """A ``json``-compatible GET of ``path``, query parameters as keyword arguments under
        their API names (``limit``, ``continue``, ``watch``, ...), through the client's
        connection pool and credentials (bearer token and its refresh hook, client
        certificates)."""

        def get(*, _request_timeout: Any = None, _preload_content: bool = False,
                **query: str) -> Any:
            api = self.api_client
            method, url, headers, _, _ = api.param_serialize(
                "GET", path, query_params=list(query.items()),
                header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
            response = api.call_api(method, url, headers, _request_timeout=_request_timeout)
            if not 200 <= response.status <= 299:
                response.read()
                raise ApiException.from_response(http_resp=response, body=None, data=None)
            return response.response  # urllib3's, unread: json() reads it, a watch streams it

        return get

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    async def json(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call an API method raw and decode its JSON; map failures to our errors."""
        kwargs.setdefault("_request_timeout", self.timeout)
        kwargs["_preload_content"] = False

        def run() -> Any:
            try:
                response = fn(*args, **kwargs)
            except ApiException as exc:
                raise _status_error(int(exc.status or 0), str(exc.reason or ""), exc.body) from None
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise Unavailable(f"Kubernetes API unreachable: {type(exc).__name__}") from exc
            try:
                data = response.data
            finally:
                response.release_conn()
            return orjson.loads(data) if data else None

        return await self.call(run)

    def _http(self) -> aiohttp.ClientSession:
        import aiohttp  # on first use: importing it builds SSL contexts (~0.1 s at start)

        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=max(self.threads, 4),
                                             ssl=_ssl_context(self.cfg))
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(sock_connect=self.timeout[0],
                                              sock_read=self.timeout[1]))
        return self._session

    async def post(self, path: str, body: bytes) -> Any:
        """POST on the event loop; decoded JSON answer, failures mapped like ``json``. URL
        and headers (credentials included, the in-cluster token re-read by its refresh hook)
        come from the official client, as for every ``getter`` request."""
        session = self._http()
        import aiohttp

        _, url, headers, _, _ = self.api_client.param_serialize(
            "POST", path, header_params={"Content-Type": "application/json",
                                         "Accept": "application/json"},
            auth_settings=["BearerToken"])
        try:
            async with session.post(url, data=body, headers=headers,
                                    server_hostname=self.cfg.tls_server_name) as response:
                data = await response.read()
                status = response.status
                reason = response.reason or ""
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Unavailable(f"Kubernetes API unreachable: {type(exc).__name__}") from exc
        if status >= 300:
            raise _status_error(status, reason, data)
        return orjson.loads(data) if data else None

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.api_client.close()

    async def aclose(self) -> None:
        """``close``, and the event-loop HTTP session."""
        if self._session is not None:
            await self._session.close()
        self.close()


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
