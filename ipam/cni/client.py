"""The plugin's HTTP client for the ipam service: one HTTP/1.1 request over a plain socket.

Why not ``urllib.request`` or ``http.client``: importing them (the ``email`` package, and
``ssl`` even for plain http) costs about 25 ms, more than the rest of a pod's ADD put
together, and urllib also follows redirects and honours ``HTTP(S)_PROXY`` inherited from
the container runtime; a node proxy must never sit between the plugin and an in-cluster
Service. The plugin needs one request per run, so the subset is small: ``Connection:
close``, a body framed by ``Content-Length``, chunked or EOF, and TLS only for https.
This module only moves bytes: what a status means is the plugin's business.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import quote, urlsplit

MAX_RESPONSE = 1 << 20
"""Answers are a few hundred bytes; a larger one is a wrong URL, not an allocation."""

USER_AGENT = "ipam-cni/0.1.0"


class Unreachable(Exception):
    """No usable HTTP answer: refused, reset, timed out, DNS failure. Retrying may help."""


class TLSFailure(Exception):
    """A certificate that does not verify or an unusable caFile: configuration, not luck."""


class Endpoint:
    """The service base URL, split once and validated before any request."""

    __slots__ = ("base_path", "ca_file", "host", "port", "scheme", "timeout", "url")

    def __init__(self, url: str, timeout: float, ca_file: str | None = None) -> None:
        """Raise ValueError if ``url`` is not an absolute http(s) URL."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url {url!r} is not an http:// or https:// URL with a host")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"url {url!r} must not carry credentials, a query or a fragment")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"url {url!r}: {exc}") from None
        self.url = url.rstrip("/")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self.timeout = timeout
        self.ca_file = ca_file

    @property
    def origin(self) -> str:
        """``scheme://host:port``, for messages."""
        return f"{self.scheme}://{self._host_port()}"

    def _host_port(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def pod_path(self, namespace: str, name: str, leaf: str) -> str:
        """``/v1/pods/{namespace}/{name}/{leaf}`` under the base path, each part escaped."""
        ns, pod = quote(namespace, safe=""), quote(name, safe="")
        return f"{self.base_path}/v1/pods/{ns}/{pod}/{leaf}"

    def request(
        self, method: str, path: str, token: str | None, body: bytes | None = None
    ) -> tuple[int, bytes]:
        """Send one request; return (status, body). ``timeout`` bounds the whole exchange.

        Raises Unreachable or TLSFailure.
        """
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self._host_port()}",
            f"User-Agent: {USER_AGENT}",
            "Accept: application/json",
            "Connection: close",
        ]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        elif method == "POST":
            lines.append("Content-Length: 0")
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        deadline = time.monotonic() + self.timeout
        try:
            sock = self._connect()
            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock.sendall(payload)
                raw = _receive(sock, deadline)
            finally:
                sock.close()
        except (TimeoutError, socket.timeout):  # noqa: UP041 - distinct classes before 3.10
            raise Unreachable(f"no answer from {self.url} within {self.timeout:g}s") from None
        except OSError as exc:
            raise Unreachable(f"cannot reach {self.url}: {exc}") from None
        return _parse(raw, self.url)

    def _connect(self) -> socket.socket:
        if self.scheme == "http":
            return socket.create_connection((self.host, self.port), timeout=self.timeout)
        import ssl  # only https pays for it

        try:  # before connecting: a bad caFile is a config error even if the server is down
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSFailure(f"cannot load caFile {self.ca_file!r}: {exc}") from None
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            return context.wrap_socket(sock, server_hostname=self.host)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise TLSFailure(
                f"TLS verification of {self.url} failed: {exc.verify_message or exc}"
            ) from None
        except BaseException:
            sock.close()
            raise


def _receive(sock: socket.socket, deadline: float) -> bytes:
    """Read until the server closes or the framed body is complete, within the deadline."""
    data = bytearray()
    expected: int | None = None  # total length once the headers tell it
    while expected is None or len(data) < expected:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_RESPONSE:
            raise OSError(f"answer larger than {MAX_RESPONSE} bytes")
        if expected is None:
            expected = _framed_length(data)
    return bytes(data)


def _framed_length(data: bytearray) -> int | None:
    """Head + Content-Length once the head is in and is final; None: read on (or to EOF)."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or data.startswith(b"HTTP/1.1 1"):
        return None
    for line in bytes(data[:end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return end + 4 + int(value)
    return None


def _parse(raw: bytes, url: str) -> tuple[int, bytes]:
    """Status and de-chunked body of a raw response, skipping 1xx interim answers."""
    while True:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.split(b"\r\n")
        parts = status_line.split(None, 2)
        if not sep or len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise Unreachable(f"{url} did not answer HTTP: {status_line[:80]!r}")
        status = int(parts[1])
        if not 100 <= status < 200:
            break
        raw = rest
    headers: dict[bytes, bytes] = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        return status, _dechunk(rest, url)
    length = headers.get(b"content-length")
    if length is not None and length.isdigit():
        if len(rest) < int(length):
            raise Unreachable(f"{url} closed the connection mid-answer")
        rest = rest[: int(length)]
    return status, rest


def _dechunk(data: bytes, url: str) -> bytes:
    body = bytearray()
    pos = 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            raise Unreachable(f"{url} sent a truncated chunked answer")
        size_field = data[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_field, 16)
        except ValueError:
            raise Unreachable(f"{url} sent a malformed chunk size {size_field[:20]!r}") from None
        if size == 0:
            return bytes(body)
        start = eol + 2
        if len(data) < start + size:
            raise Unreachable(f"{url} sent a truncated chunked answer")
        body += data[start : start + size]
        pos = start + size + 2
