"""Access control: the token store, and 401/403 on every route that needs a token."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import text

from ipam.api import pools
from ipam.services.access import Principal, Role, TokenFileError, TokenStore, parse_tokens
from tests.api.rest_conftest import (
    ADMIN,
    ADMIN_TOKEN,
    CNI,
    CNI_TOKEN,
    READ,
    READ_TOKEN,
    REST_ROUTERS,
    RestSettings,
    bearer,
    rest_app,
    rest_fixture,  # noqa: F401
    rest_settings,
    running_rest_service,
    token_lines,
)
from tests.fakeapi.server import FakeApiServer
from tests.service_harness import RunningService

# -- the token store ----------------------------------------------------------------------


def test_tokens_plain_digest_and_prefixed_digest_all_authenticate() -> None:
    store = TokenStore.of_lines(token_lines())
    assert store.authenticate(ADMIN_TOKEN) == Principal("alice", Role.ADMIN)
    assert store.authenticate(READ_TOKEN) == Principal("viewer", Role.READ)
    assert store.authenticate(CNI_TOKEN) == Principal("node", Role.CNI)
    assert store.authenticate("nope-nope-nope-nope") is None
    assert store.authenticate(hashlib.sha256(READ_TOKEN.encode()).hexdigest()) is None
    assert Principal("node", Role.CNI).actor == "cni:node"
    assert Principal("alice", Role.ADMIN).actor == "operator:alice"


@pytest.mark.parametrize(("line", "message"), [
    ("alice:admin", "expected name:role:secret"),
    ("alice:root:0123456789abcdef0123", "role 'root' is not one of read, cni, admin"),
    ("al ice:admin:0123456789abcdef0123", "token name 'al ice'"),
    ("alice:admin:short", "at least 16 characters"),
    ("alice:admin:sha256:abc", "64 hex digits"),
])
def test_bad_token_lines_name_file_and_line(line: str, message: str) -> None:
    with pytest.raises(TokenFileError, match=message) as err:
        parse_tokens(["# comment", "", line], "tokens.txt")
    assert "tokens.txt:3" in err.value.message


def test_a_name_or_a_token_twice_is_refused() -> None:
    with pytest.raises(TokenFileError, match="appears twice"):
        parse_tokens(["a:read:0123456789abcdef0123", "a:admin:0123456789abcdef0124"])
    with pytest.raises(TokenFileError, match="already given"):
        parse_tokens(["a:read:0123456789abcdef0123", "b:admin:0123456789abcdef0123"])


def _mount_secret(directory: Path, generation: str, files: dict[str, str]) -> None:
    """Lay files out as the kubelet mounts a Secret: data dir, ..data link, key links."""
    data = directory / f"..{generation}"
    data.mkdir()
    for key, value in files.items():
        (data / key).write_text(value)
    tmp = directory / "..data_tmp"
    tmp.symlink_to(data.name)
    os.replace(tmp, directory / "..data")
    for key in files:
        link = directory / key
        if not link.is_symlink():
            link.symlink_to(f"..data/{key}")


def test_secret_directory_loads_every_key_and_follows_rotation(tmp_path: Path) -> None:
    old, new = "first-admin-token-0000", "second-admin-token-0000"
    _mount_secret(tmp_path, "2026_01", {"admins": f"alice:admin:{old}\n",
                                        "readers": f"viewer:read:{READ_TOKEN}\n"})
    store = TokenStore(tmp_path, reload_seconds=0)
    assert len(store) == 2 and store.authenticate(old) == Principal("alice", Role.ADMIN)
    # No pause for the clock: the rotated keys are new files (new inodes, the old ones still
    # on disk), which the store's change check sees whatever the mtime resolution.
    _mount_secret(tmp_path, "2026_02", {"admins": f"alice:admin:{new}\n",
                                        "readers": f"viewer:read:{READ_TOKEN}\n"})
    assert store.authenticate(old) is None
    assert store.authenticate(new) == Principal("alice", Role.ADMIN)
    assert store.authenticate(READ_TOKEN) == Principal("viewer", Role.READ)


def test_a_broken_rotation_keeps_the_previous_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"alice:admin:{ADMIN_TOKEN}\n")
    store = TokenStore(path, reload_seconds=0)
    path.write_text("alice:admin:short\n")
    assert store.authenticate(ADMIN_TOKEN) == Principal("alice", Role.ADMIN)


def test_an_unreadable_token_source_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="cannot read tokens"):
        TokenStore(tmp_path / "missing")


# -- every route that needs a token ---------------------------------------------------------

ADDRESS = "10.11.128.9"
#: (method, path, json body, roles allowed besides admin). Every mutating REST route.
MUTATIONS: list[tuple[str, str, Any, set[str]]] = [
    ("POST", f"/v1/addresses/{ADDRESS}/reserve", {"note": "x"}, set()),
    ("POST", f"/v1/addresses/{ADDRESS}/release", None, set()),
    ("POST", "/v1/owners/release", {"owner": "reserved/alice"}, set()),
    ("POST", "/v1/pools/import?dry_run=true", [], set()),
    ("POST", "/v1/pods/default/p/container-deleted", {"container_id": "c1", "uid": None},
     {"cni"}),
    ("POST", "/v1/ip", {"ips": [{"ip": ADDRESS}]}, set()),
    ("POST", "/v1/pool", {"name": "gp", "size": 0}, set()),
    ("DELETE", "/v1/pool/gp", None, set()),
]
READS: list[tuple[str, set[str]]] = [
    ("/v1/addresses", {"read"}),
    (f"/v1/addresses/{ADDRESS}", {"read"}),
    ("/v1/pools", {"read"}),
    ("/v1/audit", {"read"}),
    ("/v1/ip", {"read"}),
    ("/v1/pool/gp", {"read"}),
    ("/v1/pods/default/p/ips", {"read", "cni"}),
]
#: Served without a token: the scheduler's verbs (own listener/TLS) and probes.
OPEN = {("POST", "/v1/filter"), ("POST", "/v1/prioritize"), ("POST", "/v1/bind"),
        ("GET", "/healthz"), ("GET", "/readyz")}
TOKENS = {"read": READ, "cni": CNI, "admin": ADMIN}


def _templates(paths: list[str]) -> set[str]:
    out = set()
    for path in paths:
        p = path.split("?")[0]
        p = p.replace(ADDRESS, "{address}").replace("/pods/default/p/", "/pods/{namespace}/"
                                                                          "{name}/")
        out.add(p.replace("/pool/gp", "/pool/{name}"))
    return out


def test_the_lists_cover_every_route() -> None:
    app = rest_app(RestSettings(database_url="postgresql+asyncpg://x@localhost/x"))
    routes = {(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops}
    mutating = {(m, p) for m, p in routes if m in {"POST", "PUT", "PATCH", "DELETE"}} - OPEN
    ours = {r.path for router in (*REST_ROUTERS, pools.router) for r in router.routes
            if isinstance(r, APIRoute)}
    reads = {(m, p) for m, p in routes if m == "GET" and p in ours}
    assert {p for _, p in mutating} == _templates([p for _, p, _, _ in MUTATIONS])
    assert {p for _, p in reads} == _templates([p for p, _ in READS])


async def _call(svc: RunningService, method: str, path: str, body: Any,
                headers: dict[str, str]) -> Any:
    return await svc.client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body", "others"), MUTATIONS,
                         ids=[f"{m} {p}" for m, p, _, _ in MUTATIONS])
async def test_mutations_need_the_right_token(rest: RunningService, method: str, path: str,
                                              body: Any, others: set[str]) -> None:
    for headers in ({}, bearer("not-a-token-0123456789"), {"Authorization": "Basic eDp5"}):
        resp = await _call(rest, method, path, body, headers)
        assert resp.status_code == 401, resp.text
        assert resp.json()["error"]["code"] == "unauthorized"
        assert resp.headers["www-authenticate"].startswith("Bearer")
    for role in {"read", "cni"} - others:
        resp = await _call(rest, method, path, body, TOKENS[role])
        assert resp.status_code == 403, resp.text
        assert resp.json()["error"]["code"] == "forbidden"
        assert "admin" in resp.json()["error"]["message"]
    for role in {*others, "admin"}:
        resp = await _call(rest, method, path, body, TOKENS[role])
        assert resp.status_code not in (401, 403), (role, resp.text)
    # Only the allowed calls changed anything: refused ones left no audit row.
    async with rest.runtime.db.engine.connect() as conn:
        actors = {r[0] for r in await conn.execute(text("SELECT actor FROM audit"))}
    assert actors <= {"config:floatingip-config.yaml", "operator:alice", "cni:node"}


@pytest.mark.parametrize(("path", "roles"), READS, ids=[p for p, _ in READS])
async def test_reads_need_a_token_of_a_reading_role(rest: RunningService, path: str,
                                                    roles: set[str]) -> None:
    assert (await rest.client.get(path)).status_code == 401
    assert (await rest.client.get(path, headers=bearer("x" * 20))).status_code == 401
    for role, headers in TOKENS.items():
        resp = await rest.client.get(path, headers=headers)
        if role in roles or role == "admin":
            assert resp.status_code not in (401, 403), (role, resp.text)
        else:
            assert resp.status_code == 403, (role, resp.text)


async def test_scheduler_and_probes_need_no_token(rest: RunningService) -> None:
    assert (await rest.client.get("/healthz")).status_code == 200
    resp = await rest.client.post("/v1/bind", json={"PodName": "x", "PodNamespace": "default",
                                                    "PodUID": "u", "Node": "node-0"})
    assert resp.status_code == 200 and "not found" in resp.json()["Error"]


async def test_unknown_route_is_route_not_found_not_not_found(rest: RunningService) -> None:
    resp = await rest.client.get("/v1/pods/default/p/addresses", headers=ADMIN)
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "route_not_found"
    assert "GET /v1/pods/default/p/addresses" in resp.json()["error"]["message"]
    resp = await rest.client.put("/v1/addresses", headers=ADMIN)
    assert resp.status_code == 405 and resp.json()["error"]["code"] == "method_not_allowed"


async def test_request_id_is_echoed_or_made_up(rest: RunningService) -> None:
    sent = await rest.client.get("/v1/pools", headers={**READ, "X-Request-Id": "abc-123"})
    assert sent.headers["x-request-id"] == "abc-123"
    made = await rest.client.get("/v1/pools", headers=READ)
    assert len(made.headers["x-request-id"]) == 32
    refused = await rest.client.get("/v1/pools")
    assert refused.status_code == 401 and refused.headers["x-request-id"]


async def test_without_a_token_source_everyone_is_the_anonymous_admin(
    db_url: str, fake_apiserver: FakeApiServer, tmp_path: Path
) -> None:
    settings = rest_settings(db_url, fake_apiserver, tmp_path, auth_tokens_path=None)
    async with running_rest_service(settings) as svc:
        resp = await svc.client.post(f"/v1/addresses/{ADDRESS}/reserve", json={"note": "n"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["owner"] == "reserved/anonymous"


async def test_validation_errors_name_the_field(rest: RunningService) -> None:
    resp = await rest.client.get("/v1/addresses?limit=0", headers=READ)
    assert resp.status_code == 422
    assert resp.json()["error"]["details"]["fields"][0]["field"] == "query.limit"
    resp = await rest.client.get("/v1/addresses?subnet=10.0.0.0/99", headers=READ)
    assert resp.status_code == 422 and resp.json()["error"]["details"]["field"] == "subnet"
    resp = await rest.client.post("/v1/owners/release", json={"owner": ""}, headers=ADMIN)
    assert resp.status_code == 422
    assert resp.json()["error"]["details"]["fields"][0]["field"] == "owner"
    resp = await rest.client.get("/v1/addresses/not-an-ip", headers=READ)
    assert resp.status_code == 422 and resp.json()["error"]["details"]["field"] == "address"
    resp = await rest.client.post("/v1/owners/release", content=b"{",
                                  headers={**ADMIN, "Content-Type": "application/json"})
    assert resp.status_code == 422
    assert resp.json()["error"]["details"]["fields"][0]["field"] == "body"
