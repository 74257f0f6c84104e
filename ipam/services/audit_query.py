"""Reading the audit trail: filters, newest first, opaque keyset cursors.

The cursor is the last row's id (ids only grow), so pages never repeat or skip a row that
existed when paging began; rows appended meanwhile are newer and belong before page one.
A cursor carries a fingerprint of the filters it was made for and is refused with others.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import orjson

from ipam.errors import InvalidInput
from ipam.storage.audit_repository import AuditFilter
from ipam.storage.database import Database
from ipam.storage.records import AuditRecord

MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class AuditPage:
    items: list[AuditRecord]
    next_cursor: str | None


def _fingerprint(flt: AuditFilter) -> str:
    doc = {k: (v.isoformat() if isinstance(v, datetime) else v)
           for k, v in asdict(flt).items() if k != "before_id"}
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]


def encode_cursor(fingerprint: str, last: int) -> str:
    raw = orjson.dumps({"f": fingerprint, "id": last})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, fingerprint: str) -> int:
    try:
        doc = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        last = doc["id"]
        if not isinstance(last, int) or isinstance(last, bool) or doc.get("f") != fingerprint:
            raise ValueError
    except (ValueError, TypeError, KeyError):
        raise InvalidInput("cursor is not one this query returned (it is opaque and tied to "
                           "the filters)", field="cursor") from None
    return last


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


async def query_audit(db: Database, *, address: str | None = None,
                      namespace: str | None = None, pod: str | None = None,
                      pod_uid: str | None = None, owner: str | None = None,
                      actor: str | None = None, action: str | None = None,
                      since: datetime | None = None, until: datetime | None = None,
                      limit: int = 100, cursor: str | None = None) -> AuditPage:
    """One page of audit rows matching every given filter, newest first."""
    flt = AuditFilter(address=address, pod_namespace=namespace, pod_name=pod, pod_uid=pod_uid,
                      owner_key=owner, actor=actor, action=action, since=since, until=until)
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}", field="limit")
    if flt.address is not None:
        try:
            ipaddress.ip_address(flt.address)
        except ValueError:
            raise InvalidInput(f"{flt.address!r} is not an IP address",
                               field="address") from None
    flt = AuditFilter(**{**asdict(flt), "since": _aware(flt.since), "until": _aware(flt.until),
                         "before_id": None})
    fingerprint = _fingerprint(flt)
    if cursor is not None:
        flt = AuditFilter(**{**asdict(flt), "before_id": decode_cursor(cursor, fingerprint)})
    async with db.transaction() as store:
        rows = await store.audit.query(flt, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(rows, encode_cursor(fingerprint, rows[-1].id) if more and rows else None)
