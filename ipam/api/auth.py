"""Who is calling and which request this is: bearer-token roles, request ids, extender TLS.

REST routes declare the roles they accept with the ``Annotated`` aliases below (``Reader``,
``Admin``, ``PodReader``, ``CniReporter``); a missing or unknown token is 401, a known token
of another role 403. The token store is the app's (``ipam.api.deps.AppShared``) or, on
first use, built from the settings (``auth_tokens_path``). The extender endpoints carry no
token (kube-scheduler cannot send one): they are protected by serving them on their own
listener, optionally with TLS and client certificates (``extender_tls_options``).

Audit rows carry the request id ``ipam.logs.RequestIdMiddleware`` assigns (the caller's
``X-Request-Id``, or a fresh one) and echoes in the response.
"""

from __future__ import annotations

import logging
import ssl
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from ipam import logs
from ipam.api.deps import runtime_of, shared_of
from ipam.api.responses import OrjsonResponse
from ipam.errors import Forbidden, Unauthorized, Unavailable
from ipam.services.access import Principal, Role, TokenFileError, TokenStore
from ipam.services.allocation import Actor

log = logging.getLogger(__name__)
REQUEST_ID_HEADER = "x-request-id"

_bearer = HTTPBearer(
    auto_error=False, scheme_name="bearer",
    description="A token from the service's token file: role read, cni or admin.")


def request_id(request: Request) -> str:
    """The id ``ipam.logs.RequestIdMiddleware`` gave this request (header or fresh one)."""
    rid = logs.request_id.get()
    if rid is None:  # served without the middleware (an app assembled by hand)
        given = request.headers.get(REQUEST_ID_HEADER, "")
        rid = given[:128] if given and given.isprintable() else uuid.uuid4().hex
    return rid


def token_store(request: Request) -> TokenStore:
    """The app's token store, built from the settings on first use if the app did not."""
    shared = shared_of(request.app.state)
    store = shared.tokens
    if store is None:
        settings = runtime_of(request).settings
        path = getattr(settings, "auth_tokens_path", None)
        try:
            store = TokenStore(Path(path) if path is not None else None,
                               reload_seconds=float(getattr(settings, "auth_reload_seconds",
                                                            5.0)))
        except TokenFileError as exc:
            log.error("API tokens unusable: %s", exc.message)
            raise Unavailable("the service cannot load its API tokens; see its log") from None
        shared.tokens = store
    return store


def _require(*roles: Role) -> Any:
    allowed = frozenset(roles) | {Role.ADMIN}
    names = " or ".join(sorted(r.value for r in allowed))

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        store = token_store(request)
        if not store.enabled:
            principal = store.authenticate("")
            assert principal is not None
        else:
            if credentials is None:
                raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
            found = store.authenticate(credentials.credentials)
            if found is None:
                raise Unauthorized("invalid bearer token")
            principal = found
        if principal.role not in allowed:
            raise Forbidden(f"token {principal.name!r} has role {principal.role.value}; "
                            f"this needs {names}", role=principal.role.value,
                            needs=sorted(r.value for r in allowed))
        request.state.principal = principal
        return principal

    return Depends(dependency)


#: Operator reads: addresses, pools, audit.
Reader = Annotated[Principal, _require(Role.READ)]
#: Mutations.
Admin = Annotated[Principal, _require(Role.ADMIN)]
#: A pod's allocation: the CNI plugin, and anyone who may read.
PodReader = Annotated[Principal, _require(Role.CNI, Role.READ)]
#: The CNI plugin's DEL report.
CniReporter = Annotated[Principal, _require(Role.CNI)]


def actor_of(request: Request, principal: Principal) -> Actor:
    """The audit actor of this request: the token's name and the request id."""
    return Actor(principal.actor, request_id=request_id(request))


#: Served without a token: kube-scheduler cannot send one (their own listener protects them).
TOKENLESS_PATHS = frozenset({"/v1/filter", "/v1/prioritize", "/v1/bind"})


class TokenBeforeBody:
    """With a token file, a request that carries a body must show a known token before the
    body is read. FastAPI reads and parses a route's body before the route's dependencies
    (``_require``) run, so a stranger's body would otherwise be parsed, at a few times its
    size in memory, only to be answered 401. The role is still the route's to check."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in TOKENLESS_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        has_body = headers.get(b"content-length", b"0") not in (b"0", b"") or (
            b"transfer-encoding" in headers)
        store = shared_of(scope["app"].state).tokens
        if not has_body or store is None or not store.enabled:
            await self.app(scope, receive, send)
            return
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            error = Unauthorized("missing bearer token (Authorization: Bearer <token>)")
        elif store.authenticate(token.strip()) is None:
            error = Unauthorized("invalid bearer token")
        else:
            await self.app(scope, receive, send)
            return
        await OrjsonResponse(error.to_dict(), status_code=401,
                             headers={"WWW-Authenticate": 'Bearer realm="ipam"'})(
            scope, receive, send)


def extender_tls_options(settings: object) -> dict[str, Any]:
    """uvicorn keyword arguments serving the extender with TLS, from the settings.

    ``extender_tls_cert`` and ``extender_tls_key`` turn TLS on; ``extender_tls_client_ca``
    additionally requires kube-scheduler to present a certificate signed by that CA
    (KubeSchedulerConfiguration ``tlsConfig.certFile``/``keyFile``).
    """
    cert = getattr(settings, "extender_tls_cert", None)
    key = getattr(settings, "extender_tls_key", None)
    client_ca = getattr(settings, "extender_tls_client_ca", None)
    if cert is None and key is None:
        if client_ca is not None:
            raise ValueError("extender_tls_client_ca needs extender_tls_cert and _key")
        return {}
    if cert is None or key is None:
        raise ValueError("set both extender_tls_cert and extender_tls_key")
    options: dict[str, Any] = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    if client_ca is not None:
        options.update(ssl_ca_certs=str(client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
    return options
