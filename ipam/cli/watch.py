"""``--watch [SECONDS]``: a list re-drawn every few seconds until Ctrl-C, as watch(1) would.

On a terminal each frame replaces the last (screen cleared, a header with the interval and the
time); into a pipe the frames follow one another (a blank line between tables or JSON
documents, ``---`` between YAML documents), so a script can sample them. A failed refresh
ends the watch with its error line and exit code, like the command without ``--watch``.
``--count N`` (hidden) stops after N frames: tests and scripts need an end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

DEFAULT_SECONDS = 2.0
_CLEAR = "\x1b[H\x1b[2J"

WatchOpt = Annotated[float | None, typer.Option(
    "--watch", metavar="[SECONDS]", min=0.1, show_default=False,
    help=f"Re-draw every SECONDS (default {DEFAULT_SECONDS:g}) until Ctrl-C.")]
CountOpt = Annotated[int | None, typer.Option("--count", min=1, hidden=True)]

#: Waits between frames; tests replace it to change things between two frames.
pause: Callable[[float], None] = time.sleep


def with_watch_default(args: list[str]) -> list[str]:
    """``--watch`` not followed by a number means ``--watch=2`` (typer options always take a
    value; this one's is optional). Nothing after ``--`` is touched."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return [*out, *args[i:]]
        if arg == "--watch" and not _is_number(args[i + 1] if i + 1 < len(args) else None):
            out.append(f"--watch={DEFAULT_SECONDS:g}")
        else:
            out.append(arg)
    return out


def _is_number(word: str | None) -> bool:
    if word is None:
        return False
    try:
        float(word)
    except ValueError:
        return False
    return True


class WatchableCommand(TyperCommand):
    """A command with an optional-value ``--watch``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, with_watch_default(args))


def watch(draw: Callable[[], None], *, seconds: float | None, count: int | None = None,
          title: str = "", separator: str = "") -> None:
    """``draw()`` once, or with ``seconds`` every so often until Ctrl-C or ``count`` frames."""
    if seconds is None:
        draw()
        return
    terminal = sys.stdout.isatty()
    frames = 0
    try:
        while True:
            if terminal:
                now = datetime.now(UTC).strftime("%H:%M:%SZ")
                typer.echo(f"{_CLEAR}Every {seconds:g}s: {title}   {now}   (Ctrl-C to stop)\n")
            elif frames:
                typer.echo(separator)
            draw()
            frames += 1
            if count is not None and frames >= count:
                return
            pause(seconds)
    except KeyboardInterrupt:
        return
