"""Label and field selector parsing/matching with apiserver semantics.

Unsupported field labels are rejected with 400 like the real server, so a
client that relies on a field selector the apiserver does not index fails
here too instead of silently matching.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import bad_request
from .resources import ResourceType

_KEY_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SET_RE = re.compile(r"^\s*(\S+?)\s+(in|notin)\s*\((.*)\)\s*$")
_OP_RE = re.compile(r"^\s*([^=!<>\s]+)\s*(==|=|!=|>|<)\s*(.*?)\s*$")


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str  # =, !=, in, notin, exists, !, gt, lt
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        if self.op in ("!=", "notin"):
            return not present or labels[self.key] not in self.values
        if not present:
            return False
        try:
            have = int(labels[self.key])
        except ValueError:
            return False
        bound = int(next(iter(self.values)))
        return have > bound if self.op == "gt" else have < bound


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


def _split_top(s: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _check_key(key: str, raw: str) -> None:
    if not _KEY_RE.match(key) or len(key.rsplit("/", 1)[-1]) > 63:
        raise bad_request(f"unable to parse requirement: invalid label key {key!r} in {raw!r}")


def _check_value(value: str, raw: str) -> None:
    if len(value) > 63 or not _VALUE_RE.match(value):
        raise bad_request(f"unable to parse requirement: invalid label value {value!r} in {raw!r}")


def parse_label_selector(raw: str | None) -> LabelSelector:
    """Parse ``a=b,c!=d,e in (x,y),!f,g`` (the labels.Parse grammar)."""
    if not raw or not raw.strip():
        return LabelSelector()
    reqs: list[Requirement] = []
    for part in _split_top(raw):
        term = part.strip()
        if not term:
            raise bad_request(
                f"unable to parse requirement: found '', expected: identifier in {raw!r}"
            )
        if m := _SET_RE.match(term):
            key, op, body = m.group(1), m.group(2), m.group(3)
            _check_key(key, raw)
            values = [v.strip() for v in body.split(",")] if body.strip() else []
            for v in values:
                _check_value(v, raw)
            reqs.append(Requirement(key, op, frozenset(values)))
        elif term.startswith("!"):
            key = term[1:].strip()
            _check_key(key, raw)
            reqs.append(Requirement(key, "!", frozenset()))
        elif m := _OP_RE.match(term):
            key, op, value = m.group(1), m.group(2), m.group(3)
            _check_key(key, raw)
            if op in (">", "<"):
                if not re.fullmatch(r"-?\d+", value):
                    raise bad_request(
                        "unable to parse requirement: for 'Gt', 'Lt' operators, the value must "
                        f"be an integer in {raw!r}"
                    )
                reqs.append(Requirement(key, "gt" if op == ">" else "lt", frozenset({value})))
                continue
            _check_value(value, raw)
            reqs.append(Requirement(key, "!=" if op == "!=" else "=", frozenset({value})))
        else:
            key = term
            _check_key(key, raw)
            reqs.append(Requirement(key, "exists", frozenset()))
    return LabelSelector(tuple(reqs))


def selector_from_label_selector_object(sel: Mapping[str, Any] | None) -> LabelSelector:
    """Convert a metav1.LabelSelector object (matchLabels/matchExpressions)."""
    if not sel:
        return LabelSelector()
    reqs = [Requirement(k, "=", frozenset({v})) for k, v in (sel.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for e in sel.get("matchExpressions") or []:
        reqs.append(Requirement(e["key"], ops[e["operator"]], frozenset(e.get("values") or ())))
    return LabelSelector(tuple(reqs))


def _unescape_field(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


def _split_unescaped(s: str, sep: str) -> list[str]:
    out: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s):
            cur.append(s[i : i + 2])
            i += 2
            continue
        if ch == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """String form of a selectable field as the apiserver's field set renders it."""
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, Mapping) else None
    if path == "source" and isinstance(cur, Mapping):
        cur = cur.get("component")
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if cur is None:
        return "false" if path in ("spec.hostNetwork", "spec.unschedulable") else ""
    return str(cur)


@dataclass(frozen=True, slots=True)
class FieldSelector:
    terms: tuple[tuple[str, bool, str], ...] = ()  # (field, equal?, value)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all((field_value(obj, fld) == value) == eq for fld, eq, value in self.terms)

    @property
    def empty(self) -> bool:
        return not self.terms

    def value_of(self, fld: str) -> str | None:
        """Exact-match value for ``fld`` if the selector pins it (used to narrow scans)."""
        for f, eq, v in self.terms:
            if f == fld and eq:
                return v
        return None


_FIELD_OPS = (("!=", False), ("==", True), ("=", True))


def parse_field_selector(raw: str | None, rt: ResourceType) -> FieldSelector:
    if not raw or not raw.strip():
        return FieldSelector()
    terms: list[tuple[str, bool, str]] = []
    supported = {"metadata.name", "metadata.namespace"} | rt.extra_field_selectors
    for part in _split_unescaped(raw, ","):
        if not part:
            continue
        found = next(
            ((op, eq, i) for op, eq in _FIELD_OPS if (i := _find_unescaped(part, op)) >= 0),
            None,
        )
        if found is None:
            raise bad_request(f"invalid selector: '{raw}'; can't understand '{part}'")
        op, eq, idx = found
        fld, value = part[:idx].strip(), _unescape_field(part[idx + len(op) :])
        if fld not in supported:
            raise bad_request(f"field label not supported: {fld}")
        terms.append((fld, eq, value))
    return FieldSelector(tuple(terms))


def _find_unescaped(s: str, needle: str) -> int:
    i = 0
    while i < len(s):
        if s[i] == "\\":
            i += 2
            continue
        if s.startswith(needle, i):
            return i
        i += 1
    return -1
