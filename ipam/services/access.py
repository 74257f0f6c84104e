"""Who may call the REST API: bearer tokens with a role, loaded from a file or a Secret.

A token source is one file, or a directory where a Kubernetes Secret is mounted (every
visible file in it is read; the ``..data`` links the kubelet swaps on rotation are hidden
names and skipped). Every non-blank line that is not a ``#`` comment reads::

    name:role:secret

``role`` is ``read`` (operator reads and pod allocations), ``cni`` (a pod's own allocation
and its CNI DEL report) or ``admin`` (everything, including mutations). ``secret`` is the
token's SHA-256 as 64 hex digits (optionally written ``sha256:<hex>``), or the plain token
(at least 16 characters), which is hashed as it is read: only digests stay in memory.
A presented token is hashed and compared with every digest by ``hmac.compare_digest``, so
the time taken says nothing about which digest came close.

The source is looked at again at most every ``reload_seconds``; a changed file is re-read,
and a file that does not parse during a rotation keeps the previous tokens (logged). With no
source configured, authentication is off: every caller is the admin ``anonymous`` (the
quickstart's mode; the service logs a warning at start).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ipam.errors import InvalidInput

log = logging.getLogger(__name__)

MIN_PLAIN_TOKEN = 16
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$")
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


class Role(enum.StrEnum):
    READ = "read"
    CNI = "cni"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    name: str
    role: Role

    @property
    def actor(self) -> str:
        """The audit trail's ``actor``: ``operator:<token>``, or ``cni:<token>`` for nodes."""
        prefix = "cni" if self.role is Role.CNI else "operator"
        return f"{prefix}:{self.name}"


ANONYMOUS = Principal("anonymous", Role.ADMIN)


class TokenFileError(InvalidInput):
    """A token source that cannot be used; names the file and line."""

    code = "invalid_tokens"


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    digest: bytes


def digest_of(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(lines: Iterable[str], where: str = "tokens") -> list[_Entry]:
    """Parse ``name:role:secret`` lines; ``TokenFileError`` names the first bad line."""
    entries: list[_Entry] = []
    names: set[str] = set()
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        here = f"{where}:{number}"
        name, sep1, rest = line.partition(":")
        role_text, sep2, secret = rest.partition(":")
        if not (sep1 and sep2):
            raise TokenFileError(f"{here}: expected name:role:secret")
        if not _NAME.match(name):
            raise TokenFileError(f"{here}: token name {name!r} must be 1-63 of A-Z a-z 0-9 . _ @ -")
        try:
            role = Role(role_text)
        except ValueError:
            raise TokenFileError(
                f"{here}: role {role_text!r} is not one of read, cni, admin") from None
        if name in names:
            raise TokenFileError(f"{here}: token name {name!r} appears twice")
        hexdigest = secret.removeprefix("sha256:")
        if _HEX.match(hexdigest):
            digest = bytes.fromhex(hexdigest)
        elif secret.startswith("sha256:"):
            raise TokenFileError(f"{here}: sha256: must be followed by 64 hex digits")
        elif len(secret) < MIN_PLAIN_TOKEN:
            raise TokenFileError(
                f"{here}: a plain token must have at least {MIN_PLAIN_TOKEN} characters")
        else:
            digest = digest_of(secret)
        if any(hmac.compare_digest(e.digest, digest) for e in entries):
            raise TokenFileError(f"{here}: the same token is already given to another name")
        names.add(name)
        entries.append(_Entry(Principal(name, role), digest))
    return entries


def _files(source: Path) -> list[Path]:
    if source.is_dir():
        return sorted(p for p in source.iterdir() if not p.name.startswith(".") and p.is_file())
    return [source]


class TokenStore:
    """Digests of the configured tokens; thread-safe, re-read when the source changes."""

    def __init__(self, source: Path | None, *, reload_seconds: float = 5.0) -> None:
        self.source = source
        self.reload_seconds = reload_seconds
        self._entries: list[_Entry] = []
        self._signature: tuple[tuple[str, int, int, int], ...] = ()
        self._checked = 0.0
        self._lock = threading.Lock()
        if source is not None:
            self._load()  # at start a bad source is fatal, not a silent lock-out
        else:
            log.warning("REST API authentication is off (no token file configured): every "
                        "caller is the admin 'anonymous'")

    @classmethod
    def of_lines(cls, lines: Iterable[str]) -> TokenStore:
        """A store from literal lines that never reloads (tests, embedding)."""
        store = cls.__new__(cls)
        store.source, store.reload_seconds = Path("<memory>"), float("inf")
        store._entries, store._signature = parse_tokens(lines), ()
        store._checked, store._lock = time.monotonic(), threading.Lock()
        return store

    @property
    def enabled(self) -> bool:
        return self.source is not None

    def __len__(self) -> int:
        return len(self._entries)

    def _stat(self) -> tuple[tuple[str, int, int, int], ...]:
        assert self.source is not None
        out = []
        for path in _files(self.source):
            st = os.stat(path)
            out.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(out)

    def _load(self) -> None:
        assert self.source is not None
        try:
            signature = self._stat()
            entries: list[_Entry] = []
            for path, *_ in signature:
                entries += parse_tokens(Path(path).read_text().splitlines(), path)
        except OSError as exc:
            raise TokenFileError(f"cannot read tokens from {self.source}: {exc}") from None
        names = [e.principal.name for e in entries]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise TokenFileError(f"token name(s) {', '.join(duplicated)} appear in two files")
        self._entries, self._signature = entries, signature
        self._checked = time.monotonic()
        log.info("loaded %d API token(s) from %s", len(entries), self.source)

    def _maybe_reload(self) -> None:
        if self.source is None or time.monotonic() - self._checked < self.reload_seconds:
            return
        with self._lock:
            if time.monotonic() - self._checked < self.reload_seconds:
                return
            self._checked = time.monotonic()
            try:
                if self._stat() != self._signature:
                    self._load()
            except (OSError, TokenFileError) as exc:
                log.warning("keeping the previous API tokens: %s", exc)

    def authenticate(self, token: str) -> Principal | None:
        """The principal whose token this is, or ``None``; constant time over the digests."""
        if self.source is None:
            return ANONYMOUS
        self._maybe_reload()
        digest = digest_of(token)
        found: Principal | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest):
                found = entry.principal
        return found
