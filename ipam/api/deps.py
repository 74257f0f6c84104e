"""Typed dependencies: routes ask for the runtime and the transport's shared objects by type.

Routes read no ``app.state`` attribute by name: ``ipam.app`` puts the ``Runtime`` and one
``AppShared`` there once, at start, and routes declare ``RuntimeDep`` / ``SharedDep``
(``Annotated`` aliases). The body-size middleware keeps its budget on the state itself
(``ipam.api.body_limit``; it runs before routing). The extender's verbs,
whose hot path skips FastAPI's dependency resolution, call ``runtime_of`` directly.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

from ipam.services.runtime import Runtime

if TYPE_CHECKING:
    from ipam.services.access import TokenStore
    from ipam.services.reconciler import Report


@dataclass(slots=True)
class AppShared:
    """What the transport layer keeps per process; the extender listener's app shares the
    main app's (``create_extender_app``), so both draw on one."""

    #: The API tokens; ``None`` until built (``ipam.api.auth.token_store``).
    tokens: TokenStore | None = None
    #: Bodies over 256 KiB are worked on one at a time (``ipam.api.extender``).
    large_work: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The reconciler dry run in flight, shared by concurrent callers.
    dry_run: asyncio.Task[Report] | None = None
    #: Each OpenAPI path as a pattern, with its methods (405 answers' ``Allow``).
    allow_patterns: list[tuple[re.Pattern[str], list[str]]] | None = None


def install(state: Any, runtime: Runtime | None, shared: AppShared) -> None:
    """Put the runtime (when there is one yet) and the shared objects on an app's state."""
    if runtime is not None:
        state.runtime = runtime
    state.shared = shared


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def shared_of(state: Any) -> AppShared:
    """The app's ``AppShared``; an app assembled without ``ipam.app`` gets one on first use."""
    shared: AppShared | None = getattr(state, "shared", None)
    if shared is None:
        shared = state.shared = AppShared()
    return shared


def _shared(request: Request) -> AppShared:
    return shared_of(request.app.state)


RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
SharedDep = Annotated[AppShared, Depends(_shared)]
