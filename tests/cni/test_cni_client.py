"""The plugin's small HTTP client: framing, TLS and malformed answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipam.cni.client import Unreachable, _dechunk, _parse
from tests.cni.cni_helpers import FakeIpamService, netconf, run_plugin, serve_fake

URL = "http://svc"


@pytest.mark.parametrize("framing", ["length", "chunked", "eof"])
def test_framings(fake_service: FakeIpamService, token_file: Path, framing: str) -> None:
    fake_service.framing = framing
    run = run_plugin("ADD", netconf(fake_service.url, token_file=token_file))
    assert run.returncode == 0, run
    assert run.json["ips"] == [{"address": "10.11.128.7/21", "gateway": "10.11.135.254"}]
    assert run_plugin("DEL", netconf(fake_service.url, token_file=token_file)).returncode == 0


def test_https_with_ca_file(tls_cert: tuple[Path, Path], token_file: Path) -> None:
    with serve_fake(tls=tls_cert) as fake:
        run = run_plugin("ADD", netconf(fake.url, token_file=token_file, caFile=str(tls_cert[0])))
    assert run.returncode == 0, run
    assert run.json["ips"][0]["address"] == "10.11.128.7/21"


def test_https_untrusted_certificate(tls_cert: tuple[Path, Path], token_file: Path) -> None:
    with serve_fake(tls=tls_cert) as fake:
        run = run_plugin("ADD", netconf(fake.url, token_file=token_file))
    assert run.returncode == 1
    assert run.json["code"] == 107
    assert "TLS verification" in run.json["msg"]


def test_parse_skips_interim_answers() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}xx"
    assert _parse(raw, URL) == (202, b"{}")


def test_parse_chunked_with_trailers() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n"
        b'3\r\n{"a\r\nB;x=y\r\n": 1234567}\r\n0\r\nTrailer: t\r\n\r\n'
    )
    assert _parse(raw, URL) == (200, b'{"a": 1234567}')


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "did not answer HTTP"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "did not answer HTTP"),
        (b"HTTP/1.1 OK\r\n\r\n", "did not answer HTTP"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "mid-answer"),
    ],
)
def test_parse_rejects_broken_answers(raw: bytes, fragment: str) -> None:
    with pytest.raises(Unreachable, match=fragment):
        _parse(raw, URL)


@pytest.mark.parametrize("data", [b"5\r\nabc", b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabc\r\n"])
def test_dechunk_rejects_truncated_or_malformed(data: bytes) -> None:
    with pytest.raises(Unreachable):
        _dechunk(data, URL)
