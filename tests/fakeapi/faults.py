"""Fault injection rules consulted before every API request.

Rules match ``re.search(path_regex, "<path>?<query>")`` (query present only if
the request had one) and an optional HTTP method, and fire ``count`` times
(``None`` = until cleared). The first matching live rule wins.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Literal

Action = Literal["fail", "hang", "reset"]


@dataclass
class FaultRule:
    action: Action
    pattern: re.Pattern[str]
    method: str | None = None
    remaining: int | None = 1
    status: int = 503
    reason: str | None = None
    message: str | None = None
    retry_after: int | None = None
    seconds: float = 0.0
    hits: int = 0

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0


class FaultInjector:
    """Thread-safe rule set; mutate from the test thread, consulted by the server loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []

    def _add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def fail_next(
        self,
        method: str | None,
        path_regex: str,
        status: int = 503,
        count: int | None = 1,
        *,
        reason: str | None = None,
        message: str | None = None,
        retry_after: int | None = None,
    ) -> FaultRule:
        """Answer the next ``count`` matching requests with a Status error of ``status``.

        ``reason`` defaults from the code (503 ServiceUnavailable, 410 Expired,
        429 TooManyRequests, ...); ``retry_after`` adds a Retry-After header.
        """
        return self._add(
            FaultRule(
                "fail",
                re.compile(path_regex),
                method.upper() if method else None,
                count,
                status=status,
                reason=reason,
                message=message,
                retry_after=retry_after,
            )
        )

    def expire(
        self, path_regex: str, count: int | None = 1, *, method: str | None = "GET"
    ) -> FaultRule:
        """HTTP 410 Expired for matching list/watch requests (ApiException(410) path)."""
        return self.fail_next(
            method,
            path_regex,
            410,
            count,
            reason="Expired",
            message="The provided continue parameter is too old to display a consistent list "
            "result.",
        )

    def hang(
        self, path_regex: str, seconds: float, *, method: str | None = None, count: int | None = 1
    ) -> FaultRule:
        """Delay matching requests by ``seconds`` before serving them (client-timeout tests)."""
        return self._add(
            FaultRule(
                "hang",
                re.compile(path_regex),
                method.upper() if method else None,
                count,
                seconds=seconds,
            )
        )

    def reset(
        self, path_regex: str, *, method: str | None = None, count: int | None = 1
    ) -> FaultRule:
        """Close the TCP connection without any response (connection reset / apiserver crash)."""
        return self._add(
            FaultRule("reset", re.compile(path_regex), method.upper() if method else None, count)
        )

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def match(self, method: str, target: str) -> FaultRule | None:
        """Consume one firing of the first live rule matching this request."""
        with self._lock:
            if not self._rules:
                return None
            for rule in self._rules:
                if rule.exhausted or (rule.method and rule.method != method):
                    continue
                if rule.pattern.search(target):
                    rule.hits += 1
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    self._rules = [r for r in self._rules if not r.exhausted]
                    return rule
            return None
