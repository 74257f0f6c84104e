"""Kubernetes Events on the objects ipam reads: where ``kubectl describe`` shows an operator
why their change did not take effect (a refused pool ConfigMap).

A core/v1 Event as client-go's recorder writes one (name ``<object>.<hex nanoseconds>``,
``source.component``). Recording is best effort: a refused or failed POST (no RBAC grant,
API server down) is logged and counted, never raised, because the thing being reported has
been handled already.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson

from ipam.k8s.client import KubeClient

log = logging.getLogger(__name__)

COMPONENT = "ipam"
#: events.k8s.io caps a note at 1 kB; core/v1 has no cap, but a describe should stay legible.
MAX_MESSAGE = 1024


class EventRecorder:
    def __init__(self, kube: KubeClient, *, component: str = COMPONENT,
                 host: str | None = None) -> None:
        self.kube = kube
        self.component = component
        self.host = host or socket.gethostname()
        self.recorded = 0
        #: Events that could not be posted (a metric: the RBAC grant may be missing).
        self.failed = 0

    async def warning(self, obj: Mapping[str, Any], *, kind: str, api_version: str,
                      reason: str, message: str) -> bool:
        """A Warning Event about ``obj``; whether the API server took it."""
        return await self.event(obj, kind=kind, api_version=api_version, reason=reason,
                                message=message, warning=True)

    async def event(self, obj: Mapping[str, Any], *, kind: str, api_version: str,
                    reason: str, message: str, warning: bool) -> bool:
        """A Warning or Normal Event about ``obj``; whether the API server took it."""
        meta = obj.get("metadata") or {}
        name, namespace = str(meta.get("name", "")), str(meta.get("namespace") or "default")
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE - 3] + "..."
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{name}.{time.time_ns():x}", "namespace": namespace},
            "involvedObject": {"apiVersion": api_version, "kind": kind, "name": name,
                               "namespace": namespace, "uid": meta.get("uid"),
                               "resourceVersion": meta.get("resourceVersion")},
            "type": "Warning" if warning else "Normal", "reason": reason, "message": message,
            "count": 1,
            "firstTimestamp": now, "lastTimestamp": now,
            "source": {"component": self.component, "host": self.host},
        }
        try:
            await self.kube.post(f"/api/v1/namespaces/{quote(namespace, safe='')}/events",
                                 orjson.dumps(body))
        except Exception as exc:  # best effort: see the module docstring
            self.failed += 1
            log.warning("could not record Event %s on %s %s/%s (is 'create events' granted "
                        "in %s?): %s", reason, kind, namespace, name, namespace, exc)
            return False
        self.recorded += 1
        return True
