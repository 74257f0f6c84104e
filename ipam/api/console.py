"""The operator console: static pages under ``/console/`` and the reads only it needs.

The pages (``ipam/console/``, plain HTML, CSS and JavaScript modules shipped in the package)
call the same REST API as the CLI with the token the operator types in; they carry no data
and are served without a token. No CDN, no build step: the console works on an air-gapped
cluster. A strict Content-Security-Policy allows scripts, styles and requests to this origin
only, so a value shown on a page (a pod name, a note) can never run as script.

``router`` also carries the console's read-only endpoints (``usage``, ``workloads``,
``refusals``, ``reconciler_dry_run``), so the app mounts one router.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from ipam.api import reconciler_dry_run, refusals, usage, workloads
from ipam.api.auth import Reader, token_store
from ipam.api.errors import error_responses
from ipam.errors import NotFound

router = APIRouter()
pages = APIRouter(tags=["console"], include_in_schema=False)

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Revalidate every time (ETag), so an upgraded service never serves yesterday's script.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def _walk(folder: Traversable, prefix: str = "") -> dict[str, Asset]:
    out: dict[str, Asset] = {}
    for item in folder.iterdir():
        name = f"{prefix}{item.name}"
        if item.is_dir():
            if not item.name.startswith(("_", ".")):
                out.update(_walk(item, f"{name}/"))
            continue
        media_type = MEDIA_TYPES.get("." + item.name.rsplit(".", 1)[-1])
        if media_type is None:
            continue
        body = item.read_bytes()
        out[name] = Asset(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:20]}"')
    return out


@functools.cache
def assets() -> dict[str, Asset]:
    """Every servable file of ``ipam/console``, read once (they ship with the package)."""
    return _walk(resources.files("ipam.console"))


def _serve(request: Request, name: str) -> Response:
    asset = assets().get(name)
    if asset is None:
        raise NotFound(f"no console file {name!r}")
    headers = {**SECURITY_HEADERS, "ETag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@pages.get("/console")
async def console_root() -> RedirectResponse:
    # Relative, so the console also works behind a proxy that adds a path prefix.
    return RedirectResponse("console/", status_code=308)


@pages.get("/console/")
async def console_index(request: Request) -> Response:
    return _serve(request, "index.html")


@pages.get("/console/{name:path}")
async def console_file(request: Request, name: str) -> Response:
    return _serve(request, name)


class WhoAmI(BaseModel):
    name: str = Field(description="The token's name (anonymous with authentication off)")
    role: str = Field(description="read or admin")
    authentication: bool = Field(description="false: the service has no token file")


@router.get("/v1/whoami", response_model=WhoAmI, tags=["console"],
            responses=error_responses(401, 403, 503))
async def whoami(request: Request, principal: Reader) -> WhoAmI:
    """The caller's token name and role, so the console offers only what it may do."""
    return WhoAmI(name=principal.name, role=principal.role.value,
                  authentication=token_store(request).enabled)


router.include_router(pages)
for _module in (usage, workloads, refusals, reconciler_dry_run):
    router.include_router(_module.router)
