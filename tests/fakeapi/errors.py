"""API errors rendered as ``kind: Status`` bodies, mirroring k8s.io/apimachinery/pkg/api/errors."""

from __future__ import annotations

from typing import Any

from .resources import ResourceType

JSON = dict[str, Any]

REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

OPTIMISTIC_LOCK_MSG = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


class ApiError(Exception):
    """An error the fake answers with; ``status()`` is the wire body."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: JSON | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> JSON:
        body: JSON = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body

    def __repr__(self) -> str:
        return f"ApiError({self.code}, {self.reason!r}, {self.message!r})"


def _details(rt: ResourceType | None, name: str, kind: str | None = None) -> JSON:
    d: JSON = {"name": name}
    if rt is not None and rt.group:
        d["group"] = rt.group
    d["kind"] = kind if kind is not None else (rt.plural if rt is not None else "")
    return d


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{rt.qualified} "{name}" not found', details=_details(rt, name)
    )


def namespace_not_found(namespace: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'namespaces "{namespace}" not found',
        details={"name": namespace, "kind": "namespaces"},
    )


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', details=_details(rt, name)
    )


def conflict(
    rt: ResourceType | None, name: str, msg: str, *, qualified: str | None = None
) -> ApiError:
    q = qualified if qualified is not None else (rt.qualified if rt is not None else "")
    kind = qualified if qualified is not None else None
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {q} "{name}": {msg}',
        details=_details(rt, name, kind),
    )


def invalid(rt: ResourceType, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """``causes`` are (field, reason, message) like field.ErrorList entries."""
    text = ", ".join(f"{f}: {m}" for f, _, m in causes)
    msg = (
        f'{rt.kind} "{name}" is invalid: {text}'
        if len(causes) == 1
        else f'{rt.kind} "{name}" is invalid: [{text}]'
    )
    details = _details(rt, name, rt.kind)
    details["causes"] = [{"reason": r, "message": m, "field": f} for f, r, m in causes]
    return ApiError(422, "Invalid", msg, details=details)


def bad_request(msg: str) -> ApiError:
    return ApiError(400, "BadRequest", msg)


def expired(msg: str) -> ApiError:
    return ApiError(410, "Expired", msg)


def method_not_allowed() -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
    )


def no_such_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", details={})


def from_code(code: int, message: str | None = None, reason: str | None = None) -> ApiError:
    """A generic failure for fault injection."""
    r = (
        reason
        if reason is not None
        else REASONS.get(code, "InternalError" if code >= 500 else "BadRequest")
    )
    return ApiError(code, r, message if message is not None else f"injected fault: {r}")
