"""The extender's wire types as OpenAPI schemas, for documentation and contract tests only.

The routes decode raw bytes themselves (msgspec, orjson: a 5,000-node request is ~20 MB and
pydantic would be the bottleneck), so these models never validate a request; they describe
it, exactly as k8s.io/kube-scheduler/extender/v1 marshals it (capitalised keys, ``null`` for
nil).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class NodeList(_Wire):
    items: list[dict[str, Any]] = Field(description="v1.Node objects")


class ExtenderArgs(_Wire):
    Pod: dict[str, Any] = Field(description="the v1.Pod being scheduled")
    Nodes: NodeList | None = Field(None, description="candidates (nodeCacheCapable: false)")
    NodeNames: list[str] | None = Field(None, description="candidates (nodeCacheCapable: true)")


class ExtenderFilterResult(BaseModel):
    Nodes: NodeList | None
    NodeNames: list[str] | None
    FailedNodes: dict[str, str] | None
    FailedAndUnresolvableNodes: dict[str, str] | None
    Error: str


class HostPriority(BaseModel):
    Host: str
    Score: int = Field(ge=0, le=10)


class ExtenderBindingArgs(_Wire):
    PodName: str
    PodNamespace: str
    PodUID: str
    Node: str


class ExtenderError(BaseModel):
    """Any verb: ``Error`` set; with 400 the body was not what kube-scheduler sends."""

    Error: str


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": model.model_json_schema(
            ref_template="#/components/schemas/{model}")}}}}


def documented(ok: type[BaseModel] | Any, request: type[BaseModel]) -> dict[str, Any]:
    """Keyword arguments for an extender route's decorator."""
    from ipam.api.errors import ErrorBody

    return {
        "response_model": ok,
        "responses": {400: {"model": ExtenderError}, 413: {"model": ErrorBody}},
        "openapi_extra": request_body(request),
    }
