"""AMI framing for the simulator: the banner, event classes and masks, frame parsing,
action headers (``ActionFields``) and response rendering, as ``main/manager.c`` writes them."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import structlog

log = structlog.get_logger(__name__)


BANNER = "Asterisk Call Manager/11.0.0\r\n"

# Timings measured on the recorded Asterisk 22 trace (seconds).
JOIN_DELAY = 0.502  # Answer() waits ~0.5 s for media before Queue() starts
RECHECK = 1.0009  # wait_our_turn() polls once a second (+~1 ms per loop)
RING_SCALE = 1.001  # the operators' Wait(RINGDELAY) took ring * 1.001 s
AGENT_SETTLE = 0.517  # operator hangs up ~0.517 s after the talk time (Answer + Wait)
HANGUP_LAG = 0.003  # caller's Wait(PATIENCE) ends ~3 ms late
TIMER_LAG = 0.001  # ring timeout and retry fire ~1 ms late
DEFAULT_RING, DEFAULT_TALK = 2.0, 60.0  # an operator's phone when no traffic model drives it
SPY_RING = 1.0  # a supervisor phone rings this long before it answers a ChanSpy originate
SPY_WAIT = 5.0  # ChanSpy with nothing to spy on: the sim's spyer hangs up after this
CAUSE_TEXT = {0: "Unknown", 16: "Normal Clearing", 17: "User busy",
              19: "User alerting, no answer"}

# manager.h EVENT_FLAG_* bits and their names, as in manager.conf read=/Events:.
EVENT_FLAGS: dict[str, int] = {
    "system": 1 << 0, "call": 1 << 1, "log": 1 << 2, "verbose": 1 << 3, "command": 1 << 4,
    "agent": 1 << 5, "user": 1 << 6, "config": 1 << 7, "dtmf": 1 << 8, "reporting": 1 << 9,
    "cdr": 1 << 10, "dialplan": 1 << 11, "originate": 1 << 12, "agi": 1 << 13, "cc": 1 << 14,
    "aoc": 1 << 15, "test": 1 << 16, "security": 1 << 17, "message": 1 << 18,
}
ALL_EVENTS = sum(EVENT_FLAGS.values())
CALL = (EVENT_FLAGS["call"], "call,all")
AGENT = (EVENT_FLAGS["agent"], "agent,all")
SYSTEM = (EVENT_FLAGS["system"], "system,all")

UNKNOWN = "<unknown>"
STATE_DESC = {0: "Down", 4: "Ring", 5: "Ringing", 6: "Up"}
DEVSTATE_NAMES = {"UNKNOWN": 0, "NOT_INUSE": 1, "INUSE": 2, "BUSY": 3, "INVALID": 4,
                  "UNAVAILABLE": 5, "RINGING": 6, "RINGINUSE": 7, "ONHOLD": 8}
DEVSTATE_TEXT = {0: "Unknown", 1: "Not in use", 2: "In use", 3: "Busy", 4: "Invalid",
                 5: "Unavailable", 6: "Ringing", 7: "Ring+Inuse", 8: "On Hold"}
CID_PRES = "CID-CallingPres: 0 (Presentation Allowed, Not Screened)\r\n"
BRIDGE_FIELDS = ("BridgeType: basic\r\nBridgeTechnology: simple_bridge\r\n"
                 "BridgeCreator: <unknown>\r\nBridgeName: <unknown>\r\n")

NOT_INUSE, INUSE = 1, 2  # ast_device_state values used for members
IDLE, RINGING, TALKING = "idle", "ringing", "talking"  # an operator phone


class Frame(NamedTuple):
    """One AMI event as written on the wire: name, privilege class bits, CRLF text."""

    name: str
    mask: int
    text: str

    def headers(self) -> dict[str, str]:
        """The frame's headers (first of repeated ones) as a dict."""
        return frame_dict(self.text)


def parse_frame(text: str) -> list[tuple[str, str]]:
    """Split one AMI frame into ``(key, value)`` pairs, keeping order and repeats."""
    out = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line:
            continue
        key, sep, value = line.partition(":")
        out.append((key, value.removeprefix(" ")) if sep else (line, ""))
    return out


def frame_dict(text: str) -> dict[str, str]:
    """An AMI frame's headers as a dict (the first of repeated headers wins)."""
    d: dict[str, str] = {}
    for key, value in parse_frame(text):
        d.setdefault(key, value)
    return d


def event_mask(value: str | None) -> int:
    """manager.c's ``Events:`` parsing: on/off, a number, or a comma list of classes."""
    if value is None:
        return ALL_EVENTS
    v = value.strip().lower()
    if v in ("on", "yes", "true", "all", "1"):
        return ALL_EVENTS
    if v in ("off", "no", "false", "0", ""):
        return 0
    if v.isdigit():
        return int(v)
    mask = 0
    for name in v.split(","):
        mask |= ALL_EVENTS if name.strip() == "all" else EVENT_FLAGS.get(name.strip(), 0)
    return mask


def mask_number(number: str) -> str:
    """A caller number fit for a log line: every digit but the last four hidden."""
    return "*" * max(0, len(number) - 4) + number[-4:]


def fmt_hms(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def fmt_num(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


Action = Sequence[tuple[str, str]]


class ActionFields:
    """An AMI action's headers: case-insensitive lookup plus every ``Variable`` line."""

    __slots__ = ("d", "variables")

    def __init__(self, action: Action | Mapping[str, str]) -> None:
        pairs = list(action.items()) if isinstance(action, Mapping) else list(action)
        self.d: dict[str, str] = {}
        self.variables: list[str] = []
        for key, value in pairs:
            k = key.strip().lower()
            if k == "variable":  # several headers and/or a comma (or |) separated list
                self.variables.extend(v.strip() for v in re.split(r"[|,]", value) if v.strip())
            self.d.setdefault(k, value.strip())

    def get(self, key: str, default: str = "") -> str:
        return self.d.get(key, default)

    def flag(self, key: str) -> bool:
        return self.d.get(key, "").lower() in ("1", "yes", "true", "on")


def response_frame(aid: str, response: str = "Success", **headers: str | int) -> str:
    lines = [f"Response: {response}\r\n"]
    if aid:
        lines.append(f"ActionID: {aid}\r\n")
    lines.extend(f"{k}: {v}\r\n" for k, v in headers.items())
    return "".join(lines) + "\r\n"


def error_frame(aid: str, message: str) -> str:
    return response_frame(aid, "Error", Message=message)


def parse_callerid(text: str) -> tuple[str, str]:
    """``"王五" <13303905758>`` -> (number, name)."""
    text = text.strip()
    if "<" in text and text.endswith(">"):
        name, _, num = text[:-1].rpartition("<")
        return num.strip(), name.strip().strip('"')
    return (text, "") if text.replace("+", "").isdigit() else ("", text.strip('"'))


def local_parts(interface: str) -> tuple[str, str] | None:
    """``Local/1001@agents/n`` -> (``1001``, ``agents``)."""
    if not interface.startswith("Local/") or "@" not in interface:
        return None
    ext, _, rest = interface[6:].partition("@")
    return ext, rest.split("/", 1)[0]
