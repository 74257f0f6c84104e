"""What the commands print: kubectl-style plain tables, JSON or YAML, and notes on stderr.

Tables have no borders and nothing truncated or wrapped, so they grep and split on whitespace;
json and yaml print the API's own objects. Notes, warnings and progress go to stderr so that
stdout stays the data.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console

err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


class Output(enum.StrEnum):
    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"


class Document(enum.StrEnum):
    json = "json"
    yaml = "yaml"


class ReportOutput(enum.StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


OutputOpt = Annotated[Output, typer.Option(
    "-o", "--output", help="table, wide (more columns), json or yaml.")]

Column = tuple[str, Callable[[dict[str, Any]], object]]


def cell(value: object) -> str:
    if value is None or value == "":
        return "<none>"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "<none>"
    return str(value)


def widths(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    return [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]


def line(cells: Sequence[str], sizes: Sequence[int]) -> str:
    return "   ".join(c.ljust(w) for c, w in zip(cells, sizes, strict=True)).rstrip()


def rows(items: Sequence[dict[str, Any]], columns: Sequence[Column]) -> list[list[str]]:
    return [[cell(get(item)) for _, get in columns] for item in items]


def print_table(items: Sequence[dict[str, Any]], columns: Sequence[Column]) -> None:
    """kubectl's plain columns: no borders, nothing truncated or wrapped, easy to grep."""
    headers = [name for name, _ in columns]
    body = rows(items, columns)
    sizes = widths(headers, body)
    typer.echo("\n".join(line(r, sizes) for r in [headers, *body]))


def dump(data: object, fmt: str) -> str:
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n")
    import orjson

    return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()


def print_items(items: Sequence[dict[str, Any]], output: Output, columns: Sequence[Column]
                ) -> None:
    """``{"items": [...]}`` as JSON or YAML, else a table of ``columns``."""
    if output in (Output.json, Output.yaml):
        typer.echo(dump({"items": list(items)}, output.value))
    elif not items:
        err.print("no matching items")
    else:
        print_table(items, columns)


def pick(output: Output, columns: Sequence[Column], wide: Sequence[Column]) -> list[Column]:
    return [*columns, *wide] if output is Output.wide else list(columns)


def more_note(shown: int) -> None:
    err.print(f"showing the first {shown}; more match (raise --limit, or --limit 0 for all)")


def short_time(value: str | None) -> str | None:
    """``2024-05-01T10:00:00.123456Z`` as ``2024-05-01T10:00:00Z``."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return value


def pod(item: dict[str, Any]) -> str | None:
    """``namespace/name`` of an address's or audit row's pod."""
    if item.get("pod_name"):
        return f"{item.get('pod_namespace')}/{item['pod_name']}"
    return None


@contextmanager
def spinner(description: str) -> Iterator[None]:
    """A spinner with the elapsed time on stderr while a long call runs (nothing if stderr is
    not a terminal: pipes and logs get only the result)."""
    if not err.is_terminal:
        yield
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err, transient=True) as progress:
        progress.add_task(description, total=None)
        yield
