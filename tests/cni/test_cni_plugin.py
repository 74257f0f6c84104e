"""The plugin as a runtime sees it: a subprocess, env + stdin in, JSON + exit code out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cni.cni_helpers import (
    CONTAINER_ID,
    POD_NAME,
    POD_NS,
    POD_UID,
    TOKEN,
    V4_IP,
    V6_IP,
    FakeIpamService,
    PluginRun,
    allocation,
    envelope,
    netconf,
    run_plugin,
)

POD_PATH = f"/v1/pods/{POD_NS}/{POD_NAME}"


def assert_cni_error(run: PluginRun, code: int, *fragments: str) -> dict[str, Any]:
    """Exit 1 with spec-shaped error JSON whose msg contains every fragment."""
    assert run.returncode == 1, run
    error: dict[str, Any] = run.json
    assert error["code"] == code, error
    assert set(error) <= {"cniVersion", "code", "msg", "details"}
    assert isinstance(error["msg"], str)
    assert isinstance(error.get("details", ""), str)  # Go's types.Error wants a string
    for fragment in fragments:
        assert fragment in error["msg"], error
    return error


def test_version() -> None:
    run = run_plugin("VERSION", b"")
    assert run.returncode == 0
    assert run.json == {
        "cniVersion": "1.0.0",
        "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"],
    }


def test_add_1_0_0(fake_service: FakeIpamService, token_file: Path) -> None:
    run = run_plugin("ADD", netconf(fake_service.url, token_file=token_file))
    assert run.returncode == 0, run
    assert run.json == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.11.128.7/21", "gateway": "10.11.135.254"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.11.135.254"}],
        "dns": {},
    }
    (request,) = fake_service.requests
    assert request.method == "GET"
    assert request.path == f"{POD_PATH}/ips"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Accept"] == "application/json"


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_add_0_3_and_0_4(fake_service: FakeIpamService, token_file: Path, version: str) -> None:
    run = run_plugin("ADD", netconf(fake_service.url, version, token_file=token_file))
    assert run.returncode == 0, run
    assert run.json == {
        "cniVersion": version,
        "ips": [{"version": "4", "address": "10.11.128.7/21", "gateway": "10.11.135.254"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.11.135.254"}],
        "dns": {},
    }


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0"])
def test_add_legacy(fake_service: FakeIpamService, token_file: Path, version: str) -> None:
    run = run_plugin("ADD", netconf(fake_service.url, version, token_file=token_file))
    assert run.returncode == 0, run
    assert run.json == {
        "cniVersion": version,
        "ip4": {
            "ip": "10.11.128.7/21",
            "gateway": "10.11.135.254",
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.11.135.254"}],
        },
        "dns": {},
    }


def test_add_without_cni_version_is_0_1_0(fake_service: FakeIpamService, token_file: Path) -> None:
    conf = netconf(fake_service.url, token_file=token_file)
    del conf["cniVersion"]
    run = run_plugin("ADD", conf)
    assert run.returncode == 0, run
    assert run.json["cniVersion"] == "0.1.0"
    assert run.json["ip4"]["ip"] == "10.11.128.7/21"


def test_add_dual_stack(fake_service: FakeIpamService, token_file: Path) -> None:
    fake_service.pods[(POD_NS, POD_NAME)] = allocation(V4_IP, V6_IP)
    run = run_plugin("ADD", netconf(fake_service.url, token_file=token_file))
    assert run.returncode == 0, run
    assert run.json["ips"] == [
        {"address": "10.11.128.7/21", "gateway": "10.11.135.254"},
        {"address": "fd00:11::7/64", "gateway": "fd00:11::1"},
    ]
    assert run.json["routes"] == [
        {"dst": "0.0.0.0/0", "gw": "10.11.135.254"},
        {"dst": "::/0", "gw": "fd00:11::1"},
    ]
    legacy = run_plugin("ADD", netconf(fake_service.url, "0.2.0", token_file=token_file)).json
    assert legacy["ip6"] == {
        "ip": "fd00:11::7/64",
        "gateway": "fd00:11::1",
        "routes": [{"dst": "::/0", "gw": "fd00:11::1"}],
    }


def test_add_ipv6_only_0_3_1(fake_service: FakeIpamService, token_file: Path) -> None:
    fake_service.pods[(POD_NS, POD_NAME)] = allocation(V6_IP)
    run = run_plugin("ADD", netconf(fake_service.url, "0.3.1", token_file=token_file))
    assert run.returncode == 0, run
    assert run.json["ips"] == [
        {"version": "6", "address": "fd00:11::7/64", "gateway": "fd00:11::1"}
    ]
    assert run.json["routes"] == [{"dst": "::/0", "gw": "fd00:11::1"}]


def test_add_builds_cidr_from_address_and_prefix(
    fake_service: FakeIpamService, token_file: Path
) -> None:
    ip = {k: v for k, v in V4_IP.items() if k not in ("cidr", "routes", "gateway")}
    fake_service.pods[(POD_NS, POD_NAME)] = allocation(ip)
    run = run_plugin("ADD", netconf(fake_service.url, token_file=token_file))
    assert run.json == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.11.128.7/21"}],
        "routes": [],
        "dns": {},
    }


def test_add_not_found(fake_service: FakeIpamService, token_file: Path) -> None:
    fake_service.pods.clear()
    run = run_plugin("ADD", netconf(fake_service.url, token_file=token_file))
    error = assert_cni_error(run, 101, "pod default/p has no address")
    assert error["cniVersion"] == "1.0.0"
    assert "not_found" in error["details"]


def test_add_not_managed_prints_service_message(
    fake_service: FakeIpamService, token_file: Path
) -> None:
    message = (
        "pod default/p does not request the extended resource tke.cloud.tencent.com/eni-ip, "
        "so the scheduler extender never allocated it an address"
    )
    fake_service.override("GET", "ips", 404, envelope("not_managed", message, pod="default/p"))
    run = run_plugin("ADD", netconf(fake_service.url, "0.3.1", token_file=token_file))
    error = assert_cni_error(run, 102, message)
    assert error["cniVersion"] == "0.3.1"
    assert '"pod": "default/p"' in error["details"]


def test_add_not_managed_without_message_still_explains(
    fake_service: FakeIpamService, token_file: Path
) -> None:
    fake_service.override("GET", "ips", 404, {"error": {"code": "not_managed"}})
    run = run_plugin("ADD", netconf(fake_service.url, token_file=token_file))
    assert_cni_error(run, 102, "tke.cloud.tencent.com/eni-ip")


def test_add_empty_ips_is_no_address(fake_service: FakeIpamService, token_file: Path) -> None:
    fake_service.pods[(POD_NS, POD_NAME)] = allocation()
    run = run_plugin("ADD", netconf(fake_service.url, token_file=token_file))
    assert_cni_error(run, 101, "no address")


@pytest.mark.parametrize("status", [401, 403])
def test_add_token_refused(fake_service: FakeIpamService, tmp_path: Path, status: int) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    if status == 403:
        fake_service.token = None
        fake_service.override("GET", "ips", 403, envelope("forbidden", "token may not read pods"))
    run = run_plugin("ADD", netconf(fake_service.url, token_file=wrong))
    assert_cni_error(run, 103, f"HTTP {status}")
    assert fake_service.requests[0].headers["Authorization"] == "Bearer nope"


def test_add_without_token_file_sends_no_authorization(fake_service: FakeIpamService) -> None:
    fake_service.token = None
    run = run_plugin("ADD", netconf(fake_service.url))
    assert run.returncode == 0, run
    assert "Authorization" not in fake_service.requests[0].headers


def test_add_unreadable_token_file(fake_service: FakeIpamService, tmp_path: Path) -> None:
    run = run_plugin("ADD", netconf(fake_service.url, token_file=tmp_path / "missing"))
    assert_cni_error(run, 103, "cannot read ipam.tokenFile", str(tmp_path / "missing"))
    assert fake_service.requests == []


def test_add_timeout_is_try_again_later(fake_service: FakeIpamService, token_file: Path) -> None:
    fake_service.delay = 5
    run = run_plugin("ADD", netconf(fake_service.url, token_file=token_file, timeoutSeconds=0.3))
    assert_cni_error(run, 11, "ipam service unavailable", "within 0.3s")


def test_add_connection_refused_is_try_again_later(token_file: Path) -> None:
    run = run_plugin("ADD", netconf("http://127.0.0.1:9", token_file=token_file))
    error = assert_cni_error(run, 11, "ipam service unavailable")
    assert "GET http://127.0.0.1:9/v1/pods/default/p/ips" in error["details"]


@pytest.mark.parametrize("status", [500, 503, 429])
def test_add_server_errors_are_try_again_later(
    fake_service: FakeIpamService, token_file: Path, status: int
) -> None:
    fake_service.override("GET", "ips", status, envelope("unavailable", "database is down"))
    run = run_plugin("ADD", netconf(fake_service.url, token_file=token_file))
    assert_cni_error(run, 11, f"HTTP {status}", "database is down")


def test_add_unknown_endpoint_404_is_not_no_address(
    fake_service: FakeIpamService, token_file: Path
) -> None:
    run = run_plugin("ADD", netconf(fake_service.url + "/wrong-prefix", token_file=token_file))
    assert_cni_error(run, 100, "is ipam.url right?")


def test_add_base_path_is_kept(fake_service: FakeIpamService, token_file: Path) -> None:
    run_plugin("ADD", netconf(fake_service.url + "/ipam/", token_file=token_file))
    assert fake_service.requests[0].path == f"/ipam{POD_PATH}/ips"


def test_add_stale_uid(fake_service: FakeIpamService, token_file: Path) -> None:
    fake_service.pods[(POD_NS, POD_NAME)] = allocation(V4_IP, uid="older-uid")
    run = run_plugin("ADD", netconf(fake_service.url, token_file=token_file))
    assert_cni_error(run, 104, "older-uid", POD_UID)


def test_add_without_uid_in_args_skips_uid_check(
    fake_service: FakeIpamService, token_file: Path
) -> None:
    fake_service.pods[(POD_NS, POD_NAME)] = allocation(V4_IP, uid="older-uid")
    args = f"K8S_POD_NAMESPACE={POD_NS};K8S_POD_NAME={POD_NAME}"
    run = run_plugin("ADD", netconf(fake_service.url, token_file=token_file), CNI_ARGS=args)
    assert run.returncode == 0, run


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"<html>proxy error</html>", "not valid JSON"),
        ({"ips": "10.0.0.1"}, "'ips' is not a list"),
        ({"ips": [{"cidr": "10.0.0.300/24"}]}, "ips[0].cidr"),
        ({"ips": [{"cidr": "10.0.0.3/24", "family": 6}]}, "ips[0].family"),
        ({"ips": [{"cidr": "10.0.0.3/24", "gateway": "fd00::1"}]}, "ips[0].gateway"),
    ],
)
def test_add_invalid_allocation(
    fake_service: FakeIpamService,
    token_file: Path,
    body: object,
    fragment: str,
) -> None:
    fake_service.override("GET", "ips", 200, body)
    run = run_plugin("ADD", netconf(fake_service.url, token_file=token_file))
    error = assert_cni_error(run, 105, "invalid allocation")
    if fragment != "not valid JSON":
        assert fragment in error["msg"]


def test_missing_pod_name_is_a_clear_error(fake_service: FakeIpamService, token_file: Path) -> None:
    run = run_plugin(
        "ADD",
        netconf(fake_service.url, token_file=token_file),
        CNI_ARGS=f"IgnoreUnknown=1;K8S_POD_NAMESPACE={POD_NS}",
    )
    assert_cni_error(run, 4, "CNI_ARGS has no K8S_POD_NAME", "pod's namespace and name")
    assert fake_service.requests == []


def test_malformed_cni_args(fake_service: FakeIpamService) -> None:
    run = run_plugin("ADD", netconf(fake_service.url), CNI_ARGS="IgnoreUnknown=1;garbage")
    assert_cni_error(run, 4, "'garbage'")


def test_missing_container_id(fake_service: FakeIpamService) -> None:
    run = run_plugin("ADD", netconf(fake_service.url), CNI_CONTAINERID=None)
    assert_cni_error(run, 4, "CNI_CONTAINERID")


@pytest.mark.parametrize("command", ["ADD", "CHECK", "DEL"])
@pytest.mark.parametrize("ifname", [None, "", "a-name-of-16-chr", "..", "eth/0", "eth 0"])
def test_missing_or_invalid_ifname_is_refused(
    fake_service: FakeIpamService, token_file: Path, command: str, ifname: str | None
) -> None:
    # The spec (and libcni's skel) require CNI_IFNAME for ADD, CHECK and DEL.
    conf = check_conf(fake_service.url, token_file, "1.0.0", "10.11.128.7/21")
    run = run_plugin(command, conf, CNI_IFNAME=ifname)
    assert_cni_error(run, 4, "CNI_IFNAME")
    assert fake_service.requests == []


def test_longest_ifname_is_accepted(fake_service: FakeIpamService, token_file: Path) -> None:
    run = run_plugin("ADD", netconf(fake_service.url, token_file=token_file),
                     CNI_IFNAME="a-name-of-15-ch")
    assert run.returncode == 0, run


@pytest.mark.parametrize("command", [None, "", "GC", "add"])
def test_unknown_command(command: str | None) -> None:
    run = run_plugin("ADD", netconf("http://127.0.0.1:9"), CNI_COMMAND=command)
    assert_cni_error(run, 4, "CNI_COMMAND")


@pytest.mark.parametrize("stdin", [
    b"{not json", b"", b"\xff\xfe", b"[1, 2]",
    b"[" * 100_000 + b"]" * 100_000,  # RecursionError inside json, not a ValueError
    b'{"ipam": ' + b"{\"a\": " * 100_000 + b"1" + b"}" * 100_001,
    b'{"cniVersion": "1.0.0", "ipam": {"timeoutSeconds": ' + b"9" * 5_000 + b"}}",
], ids=["syntax", "empty", "encoding", "list", "brackets", "objects", "huge-int"])
def test_bad_stdin_is_decoding_failure(stdin: bytes) -> None:
    run = run_plugin("ADD", stdin)
    error = assert_cni_error(run, 6, "network config on stdin")
    assert error["cniVersion"] == "1.0.0"


def test_unsupported_version() -> None:
    run = run_plugin("ADD", netconf("http://127.0.0.1:9", "1.1.0"))
    error = assert_cni_error(run, 1, "'1.1.0'")
    assert "1.0.0" in error["details"]


@pytest.mark.parametrize(
    ("ipam", "fragment"),
    [
        ({"url": None}, "ipam.url is missing"),
        ({"url": "ipam.kube-system.svc:9041"}, "not an http:// or https:// URL"),
        ({"url": "http://h:notaport"}, "ipam.url"),
        ({"timeoutSeconds": 0}, "timeoutSeconds"),
        ({"timeoutSeconds": "5"}, "timeoutSeconds"),
        ({"timeoutSeconds": 1e308}, "timeoutSeconds"),  # overflowed the socket timeout
        ({"timeoutSeconds": 10**400}, "timeoutSeconds"),
        ({"timeoutSeconds": 301}, "timeoutSeconds"),
        ({"timeoutSeconds": float("inf")}, "timeoutSeconds"),
        ({"timeoutSeconds": float("nan")}, "timeoutSeconds"),
        ({"tokenFile": 5}, "ipam.tokenFile is not a string"),
    ],
)
def test_invalid_ipam_section(ipam: dict[str, object], fragment: str) -> None:
    conf = netconf("http://127.0.0.1:9")
    conf["ipam"].update(ipam)
    assert_cni_error(run_plugin("ADD", conf), 7, fragment)


def test_no_ipam_section() -> None:
    conf = netconf("http://127.0.0.1:9")
    del conf["ipam"]
    assert_cni_error(run_plugin("DEL", conf), 7, "no 'ipam' object")


def test_https_with_bad_ca_file(tmp_path: Path) -> None:
    run = run_plugin("ADD", netconf("https://127.0.0.1:9", caFile=str(tmp_path / "missing.pem")))
    assert_cni_error(run, 107, "caFile")


# -- DEL ----------------------------------------------------------------------------------


def test_del_reports_container(fake_service: FakeIpamService, token_file: Path) -> None:
    run = run_plugin("DEL", netconf(fake_service.url, token_file=token_file))
    assert (run.returncode, run.stdout) == (0, ""), run
    (request,) = fake_service.requests
    assert (request.method, request.path) == ("POST", f"{POD_PATH}/container-deleted")
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert json.loads(request.body) == {"container_id": CONTAINER_ID, "uid": POD_UID}


def test_del_without_uid_sends_null(fake_service: FakeIpamService, token_file: Path) -> None:
    args = f"K8S_POD_NAMESPACE={POD_NS};K8S_POD_NAME={POD_NAME}"
    run = run_plugin("DEL", netconf(fake_service.url, token_file=token_file), CNI_ARGS=args)
    assert run.returncode == 0, run
    assert json.loads(fake_service.requests[0].body) == {"container_id": CONTAINER_ID, "uid": None}


@pytest.mark.parametrize("code", ["not_found", "not_managed"])
def test_del_404_succeeds_and_is_idempotent(
    fake_service: FakeIpamService, token_file: Path, code: str
) -> None:
    fake_service.override("POST", "container-deleted", 404, envelope(code, "gone"))
    for _ in range(2):
        run = run_plugin("DEL", netconf(fake_service.url, "0.2.0", token_file=token_file))
        assert (run.returncode, run.stdout) == (0, ""), run


def test_del_404_from_a_router_is_an_error(fake_service: FakeIpamService, token_file: Path) -> None:
    run = run_plugin("DEL", netconf(fake_service.url + "/wrong", token_file=token_file))
    assert_cni_error(run, 100, "is ipam.url right?")


def test_del_unreachable_is_try_again_later(token_file: Path) -> None:
    run = run_plugin("DEL", netconf("http://127.0.0.1:9", token_file=token_file))
    assert_cni_error(run, 11, "ipam service unavailable")


def test_del_server_error_is_try_again_later(
    fake_service: FakeIpamService, token_file: Path
) -> None:
    fake_service.override("POST", "container-deleted", 503, envelope("unavailable", "db down"))
    run = run_plugin("DEL", netconf(fake_service.url, token_file=token_file))
    assert_cni_error(run, 11, "db down")


def test_del_token_refused(fake_service: FakeIpamService) -> None:
    run = run_plugin("DEL", netconf(fake_service.url))
    assert_cni_error(run, 103, "HTTP 401")


def test_del_without_pod_identity_succeeds(fake_service: FakeIpamService, token_file: Path) -> None:
    run = run_plugin("DEL", netconf(fake_service.url, token_file=token_file), CNI_ARGS="")
    assert (run.returncode, run.stdout) == (0, "")
    assert "nothing to release" in run.stderr
    assert fake_service.requests == []


# -- CHECK --------------------------------------------------------------------------------


def check_conf(url: str, token_file: Path, version: str, *addresses: str) -> dict[str, Any]:
    conf = netconf(url, version, token_file=token_file)
    conf["prevResult"] = {
        "cniVersion": version,
        "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/test"}],
        "ips": [{"address": a, "interface": 0} for a in addresses],
        "dns": {},
    }
    return conf


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"])
def test_check_matching(fake_service: FakeIpamService, token_file: Path, version: str) -> None:
    run = run_plugin("CHECK", check_conf(fake_service.url, token_file, version, "10.11.128.7/21"))
    assert (run.returncode, run.stdout) == (0, ""), run


def test_check_mismatch(fake_service: FakeIpamService, token_file: Path) -> None:
    conf = check_conf(fake_service.url, token_file, "1.0.0", "10.11.128.8/21")
    assert_cni_error(run_plugin("CHECK", conf), 106, "10.11.128.8/21", "allocated 10.11.128.7/21")


def test_check_extra_address_is_a_mismatch(fake_service: FakeIpamService, token_file: Path) -> None:
    conf = check_conf(fake_service.url, token_file, "1.0.0", "10.11.128.7/21", "fd00:11::7/64")
    assert_cni_error(run_plugin("CHECK", conf), 106)


def test_check_needs_prev_result(fake_service: FakeIpamService, token_file: Path) -> None:
    conf = netconf(fake_service.url, token_file=token_file)
    assert_cni_error(run_plugin("CHECK", conf), 7, "prevResult")


def test_check_not_for_old_versions(fake_service: FakeIpamService, token_file: Path) -> None:
    conf = check_conf(fake_service.url, token_file, "0.3.1", "10.11.128.7/21")
    assert_cni_error(run_plugin("CHECK", conf), 1, "CHECK")


def test_check_propagates_service_errors(fake_service: FakeIpamService, token_file: Path) -> None:
    fake_service.pods.clear()
    conf = check_conf(fake_service.url, token_file, "1.0.0", "10.11.128.7/21")
    assert_cni_error(run_plugin("CHECK", conf), 101)


def test_401_without_token_file_says_so(fake_service: FakeIpamService) -> None:
    run = run_plugin("ADD", netconf(fake_service.url))
    assert_cni_error(run, 103, "HTTP 401", "ipam.tokenFile is not set")


@pytest.mark.parametrize("code", ["route_not_found", "pod_unknown"])
def test_404_with_another_error_code_is_a_wrong_url(
    fake_service: FakeIpamService, token_file: Path, code: str
) -> None:
    # Only not_found and not_managed speak of the pod; any other 404 is a wrong ipam.url.
    fake_service.override("GET", "ips", 404, envelope(code, "no route GET /v1/pods/x"))
    run = run_plugin("ADD", netconf(fake_service.url, token_file=token_file))
    error = assert_cni_error(run, 100, "is ipam.url right?")
    assert code in error["details"]


@pytest.mark.parametrize("body", [envelope("route_not_found", "no route"), {"detail": "x"}])
def test_del_404_that_is_not_about_the_pod_fails(
    fake_service: FakeIpamService, token_file: Path, body: dict[str, Any]
) -> None:
    fake_service.override("POST", "container-deleted", 404, body)
    run = run_plugin("DEL", netconf(fake_service.url, token_file=token_file))
    assert_cni_error(run, 100, "is ipam.url right?")


def test_404_without_envelope_is_a_wrong_url(
    fake_service: FakeIpamService, token_file: Path
) -> None:
    fake_service.override("GET", "ips", 404, {"detail": "Not Found"})
    run = run_plugin("ADD", netconf(fake_service.url, token_file=token_file))
    assert_cni_error(run, 100, "is ipam.url right?")


def test_other_client_errors_carry_the_service_message(
    fake_service: FakeIpamService, token_file: Path
) -> None:
    fake_service.override("GET", "ips", 409, envelope("conflict", "pool 10.11.128.0/21 is full"))
    run = run_plugin("ADD", netconf(fake_service.url, token_file=token_file))
    assert_cni_error(run, 100, "HTTP 409", "pool 10.11.128.0/21 is full")


def test_multi_line_token_is_refused(fake_service: FakeIpamService, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc\nX-Injected: 1\n")
    run = run_plugin("ADD", netconf(fake_service.url, token_file=token))
    assert_cni_error(run, 103, "not a one-line token")
    assert fake_service.requests == []


def test_ipv6_service_address(token_file: Path) -> None:
    """A bracketed IPv6 URL parses; nothing listens on port 9 of ::1, so: try again later."""
    run = run_plugin("ADD", netconf("http://[::1]:9", token_file=token_file))
    error = assert_cni_error(run, 11)
    assert "http://[::1]:9/v1/pods/default/p/ips" in error["details"]
