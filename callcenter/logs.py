"""Logging set-up in one place: JSON lines in production, readable in a terminal."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

_NUMBER = re.compile(r"(?<!\d)(\d{3})\d{4,}(\d{4})(?!\d)")


def mask_numbers(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """Last line of defence: no full phone number ever reaches a log line."""
    for key, value in event.items():
        if isinstance(value, str) and len(value) >= 11:
            event[key] = _NUMBER.sub(r"\1****\2", value)
    return event


class _Stderr:
    """Writes each line to whatever ``sys.stderr`` is *now* (test runners swap it)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def setup(level: str = "info", fmt: str = "auto") -> None:
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (structlog.dev.ConsoleRenderer() if fmt == "console"
                     else structlog.processors.JSONRenderer(ensure_ascii=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=False),
            structlog.processors.format_exc_info,
            mask_numbers,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)),
        logger_factory=lambda *args: _Stderr(),
        cache_logger_on_first_use=False,
    )
