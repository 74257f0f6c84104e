"""The Kubernetes API client, and the thread pool its blocking calls run in.

The official client is synchronous (urllib3). Every call goes through ``KubeClient.call`` so
it never blocks the event loop, and through one bounded pool sized for bind concurrency.
Responses are read raw (``_preload_content=False``) and parsed with orjson: the client's model
deserialisation is slow, and ``create_namespaced_binding`` cannot parse the Status the API
server answers with at all (kubernetes-client/python#547).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ipam.errors import Unavailable
from ipam.settings import Settings

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
        self.api_client = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.coordination = client.CoordinationV1Api(self.api_client)
        self.timeout = timeout
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kube")

    @classmethod
    def from_settings(cls, settings: Settings) -> KubeClient:
        return cls(configuration(settings), threads=settings.kube_threads,
                   timeout=settings.kube_timeout_seconds)

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
                raise _status_error(exc) from None
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise Unavailable(f"Kubernetes API unreachable: {type(exc).__name__}") from exc
            try:
                data = response.data
            finally:
                response.release_conn()
            return orjson.loads(data) if data else None

        return await self.call(run)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.api_client.close()


def _status_error(exc: ApiException) -> Exception:
    status = int(exc.status or 0)
    reason, message = str(exc.reason or ""), ""
    if exc.body:
        try:
            body = orjson.loads(exc.body)
            reason = str(body.get("reason") or reason)
            message = str(body.get("message") or "")
        except (orjson.JSONDecodeError, AttributeError):
            message = str(exc.body)[:200]
    if status >= 500 or status in (0, 429):
        return Unavailable(f"Kubernetes API answered {status} {reason}: {message}".strip())
    return ApiStatusError(status, reason, message)
