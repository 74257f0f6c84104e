"""Maps the ``IpamError`` tree to ``{"error": {code, message, details}}`` once, for every route."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from ipam.api.responses import OrjsonResponse
from ipam.errors import IpamError

log = logging.getLogger(__name__)


def error_body(code: str, message: str, **details: object) -> dict[str, object]:
    return {"error": {"code": code, "message": message, "details": details}}


def install(app: FastAPI) -> None:
    @app.exception_handler(IpamError)
    async def _ipam(_: Request, exc: IpamError) -> OrjsonResponse:
        return OrjsonResponse(exc.to_dict(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> OrjsonResponse:
        fields = [
            {"field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
             "message": err.get("msg", "")}
            for err in exc.errors()
        ]
        first = fields[0] if fields else {"field": "", "message": "invalid request"}
        return OrjsonResponse(
            error_body("invalid", f"{first['field']}: {first['message']}", fields=fields),
            status_code=422,
        )

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> OrjsonResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        return OrjsonResponse(
            error_body(codes.get(exc.status_code, "http_error"), str(exc.detail)),
            status_code=exc.status_code, headers=getattr(exc, "headers", None),
        )
