"""How the ``ipam`` command fails: one line on stderr, ``error: ...``, and an exit code.

Every failure ends that way, never as a traceback or typer's boxed usage message:

- ``CliError``: raised by the commands and the REST client, with its ``ExitCode``;
- ``ipam.errors.IpamError`` from the in-process commands: the code of its HTTP status;
- usage errors (an unknown option, a bad value, a missing argument): exit 2, and the command's
  ``--help`` named on the same line;
- anything else: exit 1 (``IPAM_DEBUG=1`` re-raises it for the traceback).

This module imports neither httpx nor the service: ``ipam --help`` and usage errors stay fast.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

import typer
from rich.text import Text
from typer.core import TyperGroup

from ipam.cli.output import err

EXIT_CODES = ("Exit codes: 0 ok; 1 unexpected error; 2 invalid input or usage; 3 conflict "
              "with the current state, or check found problems; 4 service or database "
              "unavailable; 5 token missing or wrong, or its role may not do this; "
              "6 not found.")


class ExitCode(enum.IntEnum):
    """What the ``ipam`` command's exit status means."""

    OK = 0
    ERROR = 1  # unexpected: a bug, or an answer the client does not understand
    INVALID = 2  # invalid input or usage
    CONFLICT = 3  # conflicts with the current state, or ``check`` found problems
    UNAVAILABLE = 4  # the service or the database is down or unreachable
    AUTH = 5  # missing or wrong token (401), or a role that may not do this (403)
    NOT_FOUND = 6


def exit_code_for_status(status: int) -> ExitCode:
    """The exit code of an HTTP (or ``IpamError``) status."""
    if status in (400, 413, 422):
        return ExitCode.INVALID
    if status in (401, 403):
        return ExitCode.AUTH
    if status == 404:
        return ExitCode.NOT_FOUND
    if status == 409:
        return ExitCode.CONFLICT
    if status in (502, 503, 504):
        return ExitCode.UNAVAILABLE
    return ExitCode.ERROR


def one_line(text: str) -> str:
    """Whitespace (newlines included) collapsed: an error is one line of a terminal."""
    return re.sub(r"\s+", " ", text).strip()


class CliError(Exception):
    """A failure to report as ``error: <line>`` and exit with ``exit_code``."""

    def __init__(self, message: str, exit_code: ExitCode, *, status: int | None = None,
                 code: str | None = None, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = one_line(message)
        self.exit_code = exit_code
        self.status = status
        self.code = code
        self.details: Mapping[str, Any] = details or {}

    def line(self) -> str:
        """The message with the HTTP status and code it came from, if any."""
        if self.status is None:
            return self.message
        return f"{self.message} ({self.status} {self.code or 'error'})"


def fail(message: str, code: str = "INVALID") -> NoReturn:
    """Stop the command with ``error: message`` and ``ExitCode[code]``."""
    raise CliError(message, ExitCode[code])


def error_line(message: str) -> None:
    err.print(Text.assemble(("error:", "red"), " ", message))


def warning_line(message: str) -> None:
    err.print(Text.assemble(("warning:", "yellow"), " ", message))


def report(exc: Exception) -> int:
    """Print the one line for ``exc`` and return the exit code."""
    from ipam.errors import IpamError

    if isinstance(exc, CliError):
        error_line(exc.line())
        return int(exc.exit_code)
    if isinstance(exc, IpamError):
        error_line(one_line(exc.message))
        return int(exit_code_for_status(exc.status))
    if isinstance(exc, typer.TyperException):
        return usage_error(exc)
    if isinstance(exc, BrokenPipeError):  # `ipam ips list | head`: the reader had enough
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(ExitCode.OK)
    if os.environ.get("IPAM_DEBUG"):
        raise exc
    error_line(f"unexpected {type(exc).__name__}: {one_line(str(exc))} (set IPAM_DEBUG=1 "
               "for the traceback)")
    return int(ExitCode.ERROR)


def usage_error(exc: typer.TyperException) -> int:
    """A usage error (typer's ``UsageError``, ``BadParameter``, ...) as one line; exit 2.

    typer would print the usage, a hint and the message in a box: README promises one line.
    """
    message = one_line(exc.format_message())
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        message += f" (see '{ctx.command_path} --help')"
    error_line(message)
    code = getattr(exc, "exit_code", ExitCode.INVALID)
    return int(code)


def _is_help(exc: BaseException) -> bool:
    """``ipam`` or ``ipam pools`` alone: typer has printed the help; it exits 2 by itself.

    Matched by name as typer does (the class is private)."""
    return type(exc).__name__ == "NoArgsIsHelpError"


class ErrorReportingGroup(TyperGroup):
    """The root command: every failure becomes ``error: <one line>`` and its exit code.

    Subcommands parse their arguments inside the root's ``invoke``, so their usage errors pass
    through it too; the root's own options are parsed in ``make_context``.
    """

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None,
                     **extra: Any) -> Any:  # typer's own click Context; its path is private
        try:
            return super().make_context(info_name, args, parent, **extra)
        except typer.TyperException as exc:
            if _is_help(exc):
                raise
            raise typer.Exit(usage_error(exc)) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if _is_help(exc):
                raise
            raise typer.Exit(report(exc)) from None
