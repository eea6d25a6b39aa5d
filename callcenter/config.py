"""Service configuration: ``config/callcenter.toml`` defaults, a user file over them."""

from __future__ import annotations

import ipaddress
import os
import re
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
    """One PBX (Asterisk) and its AMI link: an ``[[pbx]]`` table, or the single ``[ami]``."""

    name: str = "pbx1"  # the PBX's name in logs, metrics, alerts and record keys
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "hotline"
    secret: str = "hotline"
    events: str = "agent,call,system"
    ping_interval: float = 5.0
    action_timeout: float = 10.0
    backoff_max: float = 30.0
    #: The queues this PBX hosts (an operator's sign-in to a queue goes to every PBX
    #: hosting it); empty = every queue.
    queues: tuple[str, ...] = ()
    #: This PBX's queue_log (a file or a database URL); "" = ``[metrics] queue_log`` for
    #: the home PBX, none for the others.
    queue_log: str = ""
    #: The addresses (or networks) this PBX's FastAGI connections come from; empty =
    #: ``host`` when that is an IP address (``ivr.fastagi.AgiPbxs``).
    agi: tuple[str, ...] = ()

    def hosts(self, queue: str) -> bool:
        return not self.queues or queue in self.queues


#: A PBX's name: it is part of record keys (``<name>:<uniqueid>``) and metric labels.
PBX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
#: Keys an ``[[pbx]]`` table may have (``user`` and ``username`` are the same).
PBX_KEYS = frozenset({"name", "host", "port", "user", "username", "secret", "events",
                      "queues", "queue_log", "ping_interval", "action_timeout",
                      "backoff_max", "agi"})


@dataclass(slots=True)
class Settings:
    #: The home PBX: the single ``[ami]``, or the first ``[[pbx]]`` (its record keys are
    #: bare Uniqueids, so a centre that adds PBXs keeps its history and links).
    ami: AmiSettings = field(default_factory=AmiSettings)
    #: The other PBXs (``[[pbx]]`` tables after the first), in the file's order.
    more_pbxs: list[AmiSettings] = field(default_factory=list)
    database_url: str = "sqlite+aiosqlite:///var/hotline.db"
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    #: The web API's request rate limit (agent_console/ratelimit.py): requests per
    #: second and burst per signed-in session, and per address without one; 0/s = off.
    rate_session_per_s: float = 20.0
    rate_session_burst: int = 200
    rate_address_per_s: float = 50.0
    rate_address_burst: int = 1000
    #: Reverse proxies whose X-Forwarded-For names the client (the rate limit's address).
    trusted_proxies: list[str] = field(default_factory=list)
    timezone: str = "Asia/Shanghai"
    short_abandon_s: int = 5
    #: Asterisk's queue_log file when the service can read it (same host or a shared
    #: mount); "" = gaps are estimated from Asterisk's counters (records "estimated").
    queue_log: str = ""
    servicelevel: int = 15
    queues: dict[str, QueueConfig] = field(default_factory=dict)
    queue_titles: dict[str, str] = field(default_factory=dict)
    #: [queues.X] title_en: the title in the English UI ("" = the Chinese title).
    queue_titles_en: dict[str, str] = field(default_factory=dict)
    pause_reasons: list[str] = field(default_factory=list)
    alerts: dict[str, float] = field(default_factory=dict)
    recordings_root: Path = ROOT / "var" / "recordings"
    recordings_retention_days: int = 180
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def pbxs(self) -> list[AmiSettings]:
        """Every PBX, the home one first."""
        return [self.ami, *self.more_pbxs]

    @property
    def pbx_names(self) -> tuple[str, ...]:
        """Every PBX's name, the home one first (config order): ask once per request or
        report, not per row."""
        return tuple(p.name for p in self.pbxs)

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


def _pbx(table: dict[str, Any], where: str, defaults: dict[str, Any],
         secret_env: str | None) -> AmiSettings:
    if "user" in table and "username" in table:
        raise ConfigError(f"{where}: give user or username, not both")
    name = _typed(table, "name", str, "pbx1", where)
    if not PBX_NAME.fullmatch(name):
        raise ConfigError(f"{where}.name {name!r}: 1-32 letters, digits, '_', '.' or '-', "
                          "starting with a letter or digit")
    port = _typed(table, "port", int, 5038, where)
    if not 1 <= port <= 65535:
        raise ConfigError(f"{where}.port {port} is not a TCP port (1-65535)")
    host = _typed(table, "host", str, "127.0.0.1", where)
    if not host.strip() or any(ch in host for ch in " \r\n\t/"):
        raise ConfigError(f"{where}.host {host!r} is not a host name or address")
    user = _typed(table, "user", str, None, where) if "user" in table else \
        _typed(table, "username", str, "hotline", where)
    queues = table.get("queues", [])
    if not isinstance(queues, list) or not all(isinstance(q, str) and q for q in queues):
        raise ConfigError(f"{where}.queues must be a list of queue names")
    agi = table.get("agi", [])
    if not isinstance(agi, list) or not all(isinstance(a, str) for a in agi):
        raise ConfigError(f"{where}.agi must be a list of addresses")
    for a in agi:
        try:
            ipaddress.ip_network(a.strip(), strict=False)
        except ValueError:
            raise ConfigError(f"{where}.agi: {a!r} is not an IP address or network") from None
    timing = {k: _typed(table, k, float, defaults.get(k, dflt), where)
              for k, dflt in (("ping_interval", 5.0), ("action_timeout", 10.0),
                              ("backoff_max", 30.0))}
    for k, v in timing.items():
        if not v > 0:
            raise ConfigError(f"{where}.{k} must be more than 0 seconds")
    return AmiSettings(
        name=name, host=host, port=port, username=user,
        secret=secret_env or _typed(table, "secret", str, "hotline", where),
        events=_typed(table, "events", str, "agent,call,system", where),
        queues=tuple(queues), queue_log=_typed(table, "queue_log", str, "", where),
        agi=tuple(a.strip() for a in agi), **timing)


def _pbxs(data: dict[str, Any], env: dict[str, str]) -> list[AmiSettings]:
    """The PBXs: the ``[[pbx]]`` tables when there are any (``[ami]``'s ping_interval,
    action_timeout and backoff_max are then their defaults), else the single ``[ami]``.

    Each ``[[pbx]]``'s secret may come from ``HOTLINE_AMI_SECRET_<NAME>`` (the name
    upper-cased, ``-`` and ``.`` as ``_``); ``HOTLINE_AMI_SECRET`` is ``[ami]``'s.
    Raises :class:`ConfigError` for a duplicate name or address, a bad port or name, or
    an unknown key (a misspelt key would silently fall back to a default)."""
    ami = data.get("ami", {})
    if not isinstance(ami, dict):
        raise ConfigError("ami must be a table")
    tables = data.get("pbx")
    if tables is None:
        return [_pbx(ami, "ami", {}, env.get("HOTLINE_AMI_SECRET"))]
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict)
                                                            for t in tables):
        raise ConfigError("pbx must be one or more [[pbx]] tables")
    out: list[AmiSettings] = []
    for i, table in enumerate(tables):
        where = f"pbx[{i}]"
        unknown = sorted(set(table) - PBX_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} "
                              f"(known: {', '.join(sorted(PBX_KEYS))})")
        if "name" not in table:
            raise ConfigError(f"{where} needs a name")
        env_key = "HOTLINE_AMI_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", str(table["name"])).upper()
        out.append(_pbx(table, f"{where} ({table['name']})", ami, env.get(env_key)))
    names: dict[str, str] = {}
    addresses: dict[tuple[str, int], str] = {}
    for p in out:
        if p.name.lower() in names:
            raise ConfigError(f"pbx name {p.name!r} is used twice")
        names[p.name.lower()] = p.name
        if (p.host, p.port) in addresses:
            raise ConfigError(f"pbx {p.name!r} has the same host and port as "
                              f"{addresses[(p.host, p.port)]!r}: {p.host}:{p.port}")
        addresses[(p.host, p.port)] = p.name
    return out


def load(path: str | Path | None = None, *, env: dict[str, str] | None = None) -> Settings:
    """Defaults from the shipped file, then ``path`` over them, then the environment."""
    env = dict(os.environ) if env is None else env
    data = _read(DEFAULT_FILE)
    if path is not None:
        data = _merge(data, _read(Path(path)))
    s = Settings(raw=data)
    pbxs = _pbxs(data, env)
    s.ami, s.more_pbxs = pbxs[0], pbxs[1:]
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
    s.trusted_proxies = _typed(web, "trusted_proxies", list, [], "web")
    if not all(isinstance(p, str) for p in s.trusted_proxies):
        raise ConfigError("[web] trusted_proxies must be a list of addresses")
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
        s.queue_titles_en[name] = _typed(q, "title_en", str, "", where)
    s.pause_reasons = list(data.get("agents", {}).get("pause_reasons", []))
    s.alerts = {k: float(v) for k, v in data.get("alerts", {}).items()}
    rec = data.get("recordings", {})
    root = Path(_typed(rec, "root", str, "var/recordings", "recordings"))
    s.recordings_root = root if root.is_absolute() else ROOT / root
    s.recordings_retention_days = _typed(rec, "retention_days", int, 180, "recordings")
    if s.recordings_retention_days < 1:
        raise ConfigError("recordings.retention_days must be at least 1")
    return s
