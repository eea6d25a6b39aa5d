"""Service configuration: ``config/callcenter.toml`` defaults, a user file over them."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from acd.state import QueueConfig

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = ROOT / "config" / "callcenter.toml"


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the key."""


@dataclass(slots=True)
class AmiSettings:
    name: str = "pbx1"  # the PBX's name in logs, metrics and alerts
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "hotline"
    secret: str = "hotline"
    events: str = "agent,call,system"
    ping_interval: float = 5.0
    action_timeout: float = 10.0
    backoff_max: float = 30.0


@dataclass(slots=True)
class Settings:
    ami: AmiSettings = field(default_factory=AmiSettings)
    database_url: str = "sqlite+aiosqlite:///var/hotline.db"
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    #: The web API's request rate limit (agent_console/ratelimit.py): requests per
    #: second and burst per signed-in session, and per address without one; 0/s = off.
    rate_session_per_s: float = 20.0
    rate_session_burst: int = 200
    rate_address_per_s: float = 50.0
    rate_address_burst: int = 1000
    timezone: str = "Asia/Shanghai"
    short_abandon_s: int = 5
    #: Asterisk's queue_log file when the service can read it (same host or a shared
    #: mount); "" = gaps are estimated from Asterisk's counters (records "estimated").
    queue_log: str = ""
    servicelevel: int = 15
    queues: dict[str, QueueConfig] = field(default_factory=dict)
    queue_titles: dict[str, str] = field(default_factory=dict)
    pause_reasons: list[str] = field(default_factory=list)
    alerts: dict[str, float] = field(default_factory=dict)
    recordings_root: Path = ROOT / "var" / "recordings"
    recordings_retention_days: int = 180
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def servicelevel_for(self, queue: str) -> int:
        q = self.queues.get(queue)
        return q.servicelevel if q else self.servicelevel

    def default_queue_config(self) -> QueueConfig:
        return QueueConfig(servicelevel=self.servicelevel, wrapuptime=0)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None


def _typed(section: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    value = section.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{where}.{key} must be {kind.__name__}, not {value!r}")
    return value


def load(path: str | Path | None = None, *, env: dict[str, str] | None = None) -> Settings:
    """Defaults from the shipped file, then ``path`` over them, then the environment."""
    env = dict(os.environ) if env is None else env
    data = _read(DEFAULT_FILE)
    if path is not None:
        data = _merge(data, _read(Path(path)))
    ami = data.get("ami", {})
    s = Settings(raw=data)
    s.ami = AmiSettings(
        name=_typed(ami, "name", str, "pbx1", "ami"),
        host=_typed(ami, "host", str, "127.0.0.1", "ami"),
        port=_typed(ami, "port", int, 5038, "ami"),
        username=_typed(ami, "username", str, "hotline", "ami"),
        secret=env.get("HOTLINE_AMI_SECRET") or _typed(ami, "secret", str, "hotline", "ami"),
        events=_typed(ami, "events", str, "agent,call,system", "ami"),
        ping_interval=_typed(ami, "ping_interval", float, 5.0, "ami"),
        action_timeout=_typed(ami, "action_timeout", float, 10.0, "ami"),
        backoff_max=_typed(ami, "backoff_max", float, 30.0, "ami"),
    )
    db = data.get("database", {})
    s.database_url = env.get("HOTLINE_DATABASE_URL") or _typed(db, "url", str, s.database_url,
                                                               "database")
    web = data.get("web", {})
    s.web_host = _typed(web, "host", str, "127.0.0.1", "web")
    s.web_port = _typed(web, "port", int, 8080, "web")
    s.rate_session_per_s = _typed(web, "rate_session_per_s", float, 20.0, "web")
    s.rate_session_burst = _typed(web, "rate_session_burst", int, 200, "web")
    s.rate_address_per_s = _typed(web, "rate_address_per_s", float, 50.0, "web")
    s.rate_address_burst = _typed(web, "rate_address_burst", int, 1000, "web")
    if min(s.rate_session_per_s, s.rate_address_per_s) < 0 or min(
            s.rate_session_burst, s.rate_address_burst) < 1:
        raise ConfigError("[web] rate limits: per second >= 0 (0 = off), bursts >= 1")
    m = data.get("metrics", {})
    s.timezone = _typed(m, "timezone", str, "Asia/Shanghai", "metrics")
    try:
        ZoneInfo(s.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"metrics.timezone {s.timezone!r} is not a known time zone") from None
    s.short_abandon_s = _typed(m, "short_abandon_s", int, 5, "metrics")
    s.servicelevel = _typed(m, "servicelevel", int, 15, "metrics")
    s.queue_log = env.get("HOTLINE_QUEUE_LOG") or _typed(m, "queue_log", str, "", "metrics")
    for name, q in data.get("queues", {}).items():
        if not isinstance(q, dict):
            raise ConfigError(f"queues.{name} must be a table")
        where = f"queues.{name}"
        s.queues[name] = QueueConfig(
            servicelevel=_typed(q, "servicelevel", int, s.servicelevel, where),
            wrapuptime=_typed(q, "wrapuptime", int, 0, where),
        )
        s.queue_titles[name] = _typed(q, "title", str, name, where)
    s.pause_reasons = list(data.get("agents", {}).get("pause_reasons", []))
    s.alerts = {k: float(v) for k, v in data.get("alerts", {}).items()}
    rec = data.get("recordings", {})
    root = Path(_typed(rec, "root", str, "var/recordings", "recordings"))
    s.recordings_root = root if root.is_absolute() else ROOT / root
    s.recordings_retention_days = _typed(rec, "retention_days", int, 180, "recordings")
    if s.recordings_retention_days < 1:
        raise ConfigError("recordings.retention_days must be at least 1")
    return s
