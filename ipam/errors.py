"""One exception tree for every failure the service reports on purpose.

``IpamError``
  - ``InvalidInput`` (400/422): a request or config that can never succeed as written.
      - ``ConfigError``: pool config; names the entry and field.
  - ``NotFound`` (404)
  - ``Conflict`` (409): the request clashes with current state (address in use, shrink refused).
  - ``PoolExhausted`` (409): no free address where the pod may go.
  - ``Unauthorized`` (401), ``Forbidden`` (403)
  - ``Unavailable`` (503): a dependency (database, API server) failed; retrying may help.

Transports map these once: REST to ``{"error": {code, message, details}}`` with the status
below, the extender to its ``Error`` string. Anything else escaping is a bug (a 500).
"""

from __future__ import annotations

from typing import Any, ClassVar


class IpamError(Exception):
    """Base of every deliberate failure."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidInput(IpamError):
    status = 422
    code = "invalid"


class ConfigError(InvalidInput):
    """A pool config entry is wrong; ``entry`` is its index, ``field`` its key."""

    code = "invalid_config"

    def __init__(self, message: str, *, entry: int | None = None, field: str | None = None,
                 **details: Any) -> None:
        where = []
        if entry is not None:
            where.append(f"entry {entry}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(prefix + message, entry=entry, field=field, **details)


class NotFound(IpamError):
    status = 404
    code = "not_found"


class NotManaged(NotFound):
    """The pod does not ask for a fixed IP, so the extender never handled it."""

    code = "not_managed"


class Conflict(IpamError):
    status = 409
    code = "conflict"


class PoolExhausted(Conflict):
    code = "pool_exhausted"


class Unauthorized(IpamError):
    status = 401
    code = "unauthorized"


class Forbidden(IpamError):
    status = 403
    code = "forbidden"


class Unavailable(IpamError):
    status = 503
    code = "unavailable"
