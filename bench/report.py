"""Tables on stdout and the JSON document (``--json``): figures, ratios, targets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Target:
    """One target of the issue: the measured value, the limit and which side passes."""

    name: str
    value: float
    limit: float
    unit: str
    #: ``le``: value <= limit passes; ``ge``: value >= limit passes.
    op: str = "le"
    note: str = ""

    @property
    def passed(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value <= self.limit if self.op == "le" else self.value >= self.limit

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": round(self.value, 4), "limit": self.limit,
                "unit": self.unit, "op": self.op, "pass": self.passed, "note": self.note}


@dataclass(slots=True)
class Section:
    """One section's results: a printable table, raw figures for JSON, targets."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "columns": self.columns, "rows": self.rows,
                "figures": self.figures, "targets": [t.to_dict() for t in self.targets],
                "notes": self.notes}


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (readable on a terminal, pasteable into docs)."""
    cells = [[fmt(v) for v in row] for row in rows]
    numeric = [[isinstance(v, int | float) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(v.rjust(w) if num else v.ljust(w)
                              for v, w, num in zip(r, widths, kinds, strict=True)) + " |"
            for r, kinds in zip(cells, numeric, strict=True)]
    return "\n".join(out)


def render(section: Section) -> str:
    parts = [f"## {section.title}", "", table(section.columns, section.rows)]
    if section.targets:
        parts += ["", table(["target", "measured", "limit", "verdict"], [
            [t.name, f"{fmt(t.value)} {t.unit}",
             f"{'<=' if t.op == 'le' else '>='} {fmt(t.limit)} {t.unit}",
             "PASS" if t.passed else "MISS"] for t in section.targets])]
    if section.notes:
        parts += ["", *(f"- {n}" for n in section.notes)]
    return "\n".join(parts) + "\n"


def summary(sections: Sequence[Section]) -> str:
    rows = [[s.name, t.name, f"{fmt(t.value)} {t.unit}",
             f"{'<=' if t.op == 'le' else '>='} {fmt(t.limit)} {t.unit}",
             "PASS" if t.passed else "MISS"] for s in sections for t in s.targets]
    return "## Targets\n\n" + table(["section", "target", "measured", "limit", "verdict"],
                                    rows) + "\n"
