"""Decode-time checks that the real apiserver performs on every write.

Uses the OpenAPI type tables shipped in the official client's models
(``openapi_types``/``attribute_map``) to:

* drop unknown fields (server-side field validation ``Warn``: pruned, reported
  in a ``Warning`` header; ``Strict``: 400),
* reject JSON type mismatches with 400 (e.g. an int annotation value, a
  string ``containerPort``),
* reject timestamps without a zone (naive ``datetime.isoformat()``), and
  canonicalise timestamps the way metav1.Time / metav1.MicroTime serialise,
* accept numbers for resource quantities (resource.Quantity unmarshals them).
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from datetime import UTC, datetime
from typing import Any

import kubernetes.client.models as _models

from .errors import ApiError, bad_request
from .resources import ResourceType

JSON = dict[str, Any]

_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_QUANTITY_MAPS = frozenset(
    {"limits", "requests", "capacity", "allocatable", "overhead", "hard", "used"}
)
_MICROTIME = frozenset(
    {
        ("V1LeaseSpec", "acquireTime"),
        ("V1LeaseSpec", "renewTime"),
        ("CoreV1Event", "eventTime"),
        ("EventsV1Event", "eventTime"),
        ("CoreV1EventSeries", "lastObservedTime"),
        ("EventsV1EventSeries", "lastObservedTime"),
    }
)
_SCALARS: dict[str, type] = {"str": str, "int": int, "bool": bool}
_GO_TYPES = {
    "str": "string",
    "int": "int64",
    "bool": "bool",
    "float": "float64",
    "bytes": "[]uint8",
}


@functools.cache
def _fields(model: str) -> dict[str, str] | None:
    cls = getattr(_models, model, None)
    if cls is None or not hasattr(cls, "openapi_types"):
        return None
    amap: dict[str, str] = cls.attribute_map
    return {amap[attr]: typ for attr, typ in cls.openapi_types.items()}


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def format_time(dt: datetime, micro: bool = False) -> str:
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def _quantity(v: int | float) -> str:
    if isinstance(v, int) or float(v).is_integer():
        return str(int(v))
    milli = v * 1000
    return f"{int(milli)}m" if float(milli).is_integer() else repr(v)


class _Walker:
    def __init__(self, kind: str, version: str) -> None:
        self.kind = kind
        self.version = version
        self.unknown: list[str] = []

    def fail(self, value: Any, typ: str, path: str, owner: str) -> ApiError:
        go = _GO_TYPES.get(typ, typ)
        return bad_request(
            f'{self.kind} in version "{self.version}" cannot be handled as a {self.kind}: '
            f"json: cannot unmarshal {_json_type(value)} into Go struct field {owner}.{path} of "
            f"type {go}"
        )

    def walk(self, value: Any, typ: str, path: str, owner: str, fld: str) -> Any:
        if typ == "object":
            return value
        if typ.startswith("List["):
            if not isinstance(value, list):
                raise self.fail(value, "[]" + typ[5:-1], path, owner)
            inner = typ[5:-1]
            return [self.walk(v, inner, path, owner, fld) for v in value if v is not None]
        if typ.startswith("Dict[str, "):
            if not isinstance(value, dict):
                raise self.fail(value, "map[string]" + typ[10:-1], path, owner)
            inner = typ[10:-1]
            if inner == "str" and all(type(v) is str for v in value.values()):
                return dict(value)  # fast path: labels, annotations, most quantity maps
            out = {}
            for k, v in value.items():
                if v is None:
                    continue
                if (
                    inner == "str"
                    and fld in _QUANTITY_MAPS
                    and isinstance(v, (int, float))
                    and not isinstance(v, bool)
                ):
                    out[k] = _quantity(v)
                else:
                    out[k] = self.walk(v, inner, path, owner, fld)
            return out
        if typ == "str":
            if not isinstance(value, str):
                raise self.fail(value, typ, path, owner)
            return value
        if typ == "bytes":
            if not isinstance(value, str):
                raise self.fail(value, typ, path, owner)
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as e:
                raise bad_request(
                    f'{self.kind} in version "{self.version}" cannot be handled as a {self.kind}: '
                    f"illegal base64 data at {path}"
                ) from e
            return value
        if typ == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.fail(value, typ, path, owner)
            return value
        if typ == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.fail(value, typ, path, owner)
            return value
        if typ == "bool":
            if not isinstance(value, bool):
                raise self.fail(value, typ, path, owner)
            return value
        if typ in ("datetime", "date"):
            if not isinstance(value, str) or not _TIME_RE.match(value):
                raise bad_request(
                    f'{self.kind} in version "{self.version}" cannot be handled as a {self.kind}: '
                    f'parsing time "{value}" as "2006-01-02T15:04:05Z07:00": cannot parse as '
                    f"RFC3339 ({path})"
                )
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return format_time(dt, micro=(owner, fld) in _MICROTIME)
        fields = _fields(typ)
        if fields is None:
            return value
        if not isinstance(value, dict):
            raise self.fail(value, typ, path, owner)
        pruned: JSON = {}
        for k, v in value.items():
            ftyp = fields.get(k)
            if ftyp is None:
                self.unknown.append(f"{path}.{k}" if path else k)
                continue
            if v is None:
                continue
            if _SCALARS.get(ftyp) is type(v):  # fast path for the common well-typed scalar
                pruned[k] = v
                continue
            sub = f"{path}.{k}" if path else k
            pruned[k] = self.walk(v, ftyp, sub, typ, k)
        return pruned


def normalize(
    rt: ResourceType, obj: JSON, field_validation: str | None = None
) -> tuple[JSON, list[str]]:
    """Return (pruned canonical object, warnings).

    Raises 400 on type errors, or on unknown fields with ``fieldValidation=Strict``.
    """
    w = _Walker(rt.kind, rt.api_version)
    out = w.walk(obj, rt.model, "", rt.model, "")
    if not w.unknown:
        return out, []
    if (field_validation or "").lower() == "strict":
        text = ", ".join(f'unknown field "{u}"' for u in w.unknown)
        raise bad_request(f"strict decoding error: {text}")
    if (field_validation or "").lower() == "ignore":
        return out, []
    return out, [f'unknown field "{u}"' for u in w.unknown]
