"""Maps the ``IpamError`` tree to ``{"error": {code, message, details}}`` once, for every route.

A path no route serves answers 404 with code ``route_not_found``, never ``not_found``: the CNI
plugin must tell a wrong ``ipam.url`` from "this pod has no address". The pydantic models
here put the same envelope into the OpenAPI document, so clients and schema-driven tests see
what the service really sends.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ipam.api.deps import shared_of
from ipam.api.responses import OrjsonResponse
from ipam.errors import IpamError

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. not_found, conflict.")
    message: str = Field(description="What went wrong, for a person.")
    details: dict[str, Any] = Field(
        default_factory=dict, description="Structured context; validation errors list "
                                          "`fields` as [{field, message}].")


class ErrorBody(BaseModel):
    """The one error shape of the REST API."""

    error: ErrorDetail


_DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing or invalid bearer token",
    403: "The token's role does not allow this",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "Request body too large",
    422: "Invalid input; `details.fields` names each bad field",
    503: "A dependency (database, API server) is unavailable; retry",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status documented with the error envelope."""
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS.get(s, "Error")}
            for s in statuses}


def error_body(code: str, message: str, **details: object) -> dict[str, object]:
    return {"error": {"code": code, "message": message, "details": details}}


#: Fields listed in one validation error: a list of thousands of bad items is as many errors,
#: and listing them all made the answer many times the request (and its memory).
MAX_FIELDS = 50


def validation_fields(exc: RequestValidationError) -> list[dict[str, str]]:
    """``[{"field": "query.limit", "message": ...}]``; body fields without the ``body.``."""
    errors = exc.errors()
    fields = [
        {"field": "body" if err.get("type") == "json_invalid" else
         ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
         "message": err.get("msg", "")}
        for err in errors[:MAX_FIELDS]
    ]
    if len(errors) > MAX_FIELDS:
        fields.append({"field": "", "message": f"{len(errors) - MAX_FIELDS} more errors "
                                               "not listed"})
    return fields


def headers_for(exc: IpamError) -> dict[str, str] | None:
    if exc.status == 401:
        return {"WWW-Authenticate": 'Bearer realm="ipam"'}
    return None


def install(app: FastAPI) -> None:
    @app.exception_handler(IpamError)
    async def _ipam(_: Request, exc: IpamError) -> OrjsonResponse:
        return OrjsonResponse(exc.to_dict(), status_code=exc.status, headers=headers_for(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> OrjsonResponse:
        fields = validation_fields(exc)
        first = fields[0] if fields else {"field": "", "message": "invalid request"}
        return OrjsonResponse(
            error_body("invalid", f"{first['field']}: {first['message']}", fields=fields),
            status_code=422,
        )

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> OrjsonResponse:
        status, body, headers = http_error(request, exc)
        return OrjsonResponse(body, status_code=status, headers=headers)

    @app.exception_handler(ClientDisconnect)
    async def _gone(_: Request, exc: ClientDisconnect) -> OrjsonResponse:
        # The client left (or was cut off by ipam.api.connections) before its body ended:
        # nobody reads this answer, and it is not an error of ours to log.
        return OrjsonResponse(error_body("client_disconnected", "the client went away before "
                                         "its request body ended"), status_code=400)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> OrjsonResponse:
        # A bug, but the caller still gets the envelope (the server logs the traceback).
        return OrjsonResponse(error_body(
            "internal", f"internal error ({type(exc).__name__}); the service log has the "
            f"traceback for {request.method} {request.url.path}"), status_code=500)


def _allowed_methods(request: Request) -> list[str]:
    """Every method the OpenAPI document lists for this path (routes may be split)."""
    app = request.app
    shared = shared_of(app.state)
    patterns = shared.allow_patterns
    if patterns is None:
        patterns = [
            (re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(path)) + "$"),
             sorted(m.upper() for m in ops))
            for path, ops in app.openapi().get("paths", {}).items()
        ]
        shared.allow_patterns = patterns
    path = request.url.path
    return sorted({m for pattern, methods in patterns if pattern.match(path) for m in methods})


def http_error(request: Request, exc: HTTPException
               ) -> tuple[int, dict[str, object], dict[str, str] | None]:
    """(status, envelope, headers) for the framework's own HTTP errors."""
    if exc.status_code == 404:
        # Routing found nothing (no route raises HTTPException(404) on purpose).
        return 404, error_body(
            "route_not_found", f"no route {request.method} {request.url.path}; the API is under "
            "/v1, see /docs", method=request.method, path=request.url.path), None
    if exc.status_code == 400:
        # The body is not JSON (FastAPI's "There was an error parsing the body").
        message = f"body: {exc.detail}"
        return 422, error_body("invalid", message, field="body",
                               fields=[{"field": "body", "message": str(exc.detail)}]), None
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
    codes = {405: "method_not_allowed", 413: "too_large"}
    return (exc.status_code, error_body(codes.get(exc.status_code, "http_error"),
                                        str(exc.detail)), headers or None)
