"""Where the service is, who is calling, and what each failure exits with."""

from __future__ import annotations

import json
from importlib.metadata import version as distribution_version
from pathlib import Path

from ipam import __version__
from ipam.settings import get_settings
from tests.api.rest_conftest import ADMIN_TOKEN, READ_TOKEN
from tests.cli.conftest import Cli, client_env, closed_port, error_line, invoke
from tests.fakeapi.server import FakeApiServer
from tests.service_harness import RunningService, wait_until


async def test_tokens_from_flags_env_and_files(cli: Cli, tmp_path: Path) -> None:
    wrong = await cli("pools", "list", token="not-a-token-0123456789")
    assert wrong.code == 5
    assert error_line(wrong) == (
        "error: invalid bearer token; pass --token or --token-file, or set IPAM_TOKEN or "
        "IPAM_TOKEN_FILE (401 unauthorized)")
    missing = await cli("pools", "list", token=None)
    assert missing.code == 5 and "missing bearer token" in error_line(missing)

    reader = await cli("ips", "reserve", "10.11.128.9", token=READ_TOKEN)
    assert reader.code == 5
    assert error_line(reader) == ("error: token 'viewer' has role read; this needs admin "
                                  "(403 forbidden)")
    assert (await cli("pools", "list", token=READ_TOKEN)).code == 0

    token_file = tmp_path / "token"
    token_file.write_text(READ_TOKEN + "\n")
    assert (await cli("pools", "list", token=None, IPAM_TOKEN_FILE=str(token_file))).code == 0
    # A flag beats the environment: the admin token from --token-file may reserve.
    admin_file = tmp_path / "admin"
    admin_file.write_text(ADMIN_TOKEN)
    flagged = await cli("--token-file", str(admin_file), "ips", "reserve", "10.11.128.9",
                        token=READ_TOKEN)
    assert flagged.code == 0, flagged
    two = tmp_path / "two"
    two.write_text(f"{READ_TOKEN}\n{ADMIN_TOKEN}\n")
    ambiguous = await cli("pools", "list", token=None, IPAM_TOKEN_FILE=str(two))
    assert ambiguous.code == 2
    assert "must hold one token and nothing else" in error_line(ambiguous)
    absent = await cli("--token-file", str(tmp_path / "nope"), "pools", "list")
    assert absent.code == 2 and "cannot read the token file" in error_line(absent)


async def test_service_down_is_exit_4_with_one_line() -> None:
    port = closed_port()
    url = f"http://127.0.0.1:{port}"
    for args in (["pools", "list"], ["ips", "list"], ["ips", "release", "10.11.128.1"],
                 ["audit", "--follow"], ["check", "--remote"]):
        run = await invoke(client_env(url), *args)
        assert run.code == 4, (args, run)
        assert error_line(run) == (f"error: cannot reach the ipam service at {url} "
                                   "(connection refused); is it running? (set --url or "
                                   "IPAM_URL)")
    # Without IPAM_URL the client goes where `ipam serve` would listen with this environment.
    by_port = await invoke(client_env(None, IPAM_PORT=str(port), IPAM_HOST="0.0.0.0"),
                           "pools", "list")
    assert by_port.code == 4 and f"at http://127.0.0.1:{port} " in error_line(by_port)
    flag = await invoke(client_env("http://127.0.0.1:1"), "--url", url, "pools", "list")
    assert f"at {url} " in error_line(flag)
    bad_url = await invoke(client_env("localhost:9040"), "pools", "list")
    assert bad_url.code == 2 and "is not http(s)://host[:port]" in error_line(bad_url)


async def test_check_in_process_needs_kubernetes_and_says_when_the_database_is_down(
        tmp_path: Path) -> None:
    get_settings.cache_clear()
    try:
        port = closed_port()
        database = f"postgresql+asyncpg://ipam:secret@127.0.0.1:{port}/ipam"
        no_kube = await invoke(client_env(IPAM_DATABASE_URL=database,
                                          IPAM_DATA_DIR=str(tmp_path)), "check")
        assert no_kube.code == 2
        assert error_line(no_kube).startswith("error: no Kubernetes configuration")
        get_settings.cache_clear()
        down = await invoke(client_env(IPAM_DATABASE_URL=database, IPAM_DATA_DIR=str(tmp_path),
                                       IPAM_KUBE_API_URL="http://127.0.0.1:1"), "check")
        assert down.code == 4, down
        assert error_line(down) == (f"error: cannot reach the database at 127.0.0.1:{port} "
                                    "(connection refused); check IPAM_DATABASE_URL")
        assert "secret" not in down.stderr
    finally:
        get_settings.cache_clear()


async def test_a_url_that_is_not_the_api_is_unavailable(fake_apiserver: FakeApiServer) -> None:
    run = await invoke(client_env(fake_apiserver.url), "pools", "list")
    assert run.code == 4, run
    assert "(is the URL an ipam service?)" in error_line(run)


async def test_version_with_and_without_the_service(rest: RunningService) -> None:
    both = await invoke(client_env(rest.url), "version")
    assert (both.code, both.stdout) == (0, f"client: {__version__}\nserver: {__version__} "
                                           f"({rest.url})\n"), both
    as_json = json.loads((await invoke(client_env(rest.url), "version", "-o", "json")).stdout)
    assert as_json == {"client": __version__, "server": __version__, "url": rest.url}

    down = await invoke(client_env(f"http://127.0.0.1:{closed_port()}"), "version")
    assert (down.code, down.stdout) == (0, f"client: {__version__}\n"), down
    assert down.stderr.startswith("server version unknown: cannot reach the ipam service")
    offline = await invoke(client_env(f"http://127.0.0.1:{closed_port()}"), "version",
                           "--client")
    assert (offline.code, offline.stdout, offline.stderr) == (0, f"client: {__version__}\n", "")


async def test_check_remote_prints_the_services_last_report(cli: Cli, rest: RunningService
                                                           ) -> None:
    reconciler = rest.runtime.reconciler
    await wait_until(lambda: reconciler.last_report is not None)
    run = await cli("check", "--remote", "-o", "json")
    assert run.code == 0, run
    report = json.loads(run.stdout)
    assert report["applied"] is True and report["findings"] == []
    assert report["started_at"] == reconciler.last_report.started_at
    table = await cli("check", "--remote")
    assert table.stdout.startswith(f"service's last pass at {report['started_at']}, repairs "
                                   "applied: ")
    both = await cli("check", "--remote", "--repair")
    assert both.code == 2 and "cannot --repair" in error_line(both)


async def test_version_flag_needs_no_service() -> None:
    run = await invoke(client_env(f"http://127.0.0.1:{closed_port()}"), "--version")
    assert (run.code, run.stdout, run.stderr) == (0, f"ipam {distribution_version('ipam')}\n",
                                                  "")
    # Eager: before the command is looked at.
    assert (await invoke(client_env(), "--version", "pools", "list")).code == 0


async def test_usage_errors_are_one_line_and_exit_2() -> None:
    env = client_env(f"http://127.0.0.1:{closed_port()}")
    for args, says in [
        (["ips", "list", "--bogus"], "error: No such option: --bogus"),
        (["ips", "list", "--state", "lost"], "error: Invalid value for '--state'"),
        (["ips", "list", "--limit", "-1"], "error: Invalid value for '--limit'"),
        (["--bogus", "pools", "list"], "error: No such option: --bogus"),
        (["pools", "show"], "error: Missing argument 'name'"),
        (["pools", "nope"], "error: No such command 'nope'"),
        (["--timeout", "0", "pools", "list"], "error: Invalid value for '--timeout'"),
    ]:
        run = await invoke(env, *args)
        assert run.code == 2, (args, run)
        line = error_line(run)
        assert line.startswith(says) and line.endswith(" --help')"), (args, line)
        assert run.stdout == "" and "╭" not in run.stderr
