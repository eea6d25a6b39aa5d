"""``callcenter check-asterisk``: is the configured Asterisk ready for the hotline?

One :class:`Check` per line, each failure with its fix; ``callcenter serve`` runs the
same at start and logs what fails.  Every question is one an administrator could ask
by hand, and the answers are parsed as Asterisk 22 gives them (main/manager.c,
main/pbx.c, apps/app_queue.c):

* AMI login and ``CoreSettings`` (Asterisk's version), then ``Command: manager show
  user <user>`` -- ``read perm:`` / ``write perm:`` must hold the classes the service
  needs (manager.conf);
* ``ModuleCheck Module: <m>.so`` for each required module (``Module not loaded``);
* ``QueueStatus`` -- each ``[queues.*]`` of callcenter.toml is a queue with the same
  ``ServiceLevel``; ``GetConfig Filename: queues.conf Category: <q>`` -- the same
  ``wrapuptime``, ``setinterfacevar=yes`` and ``ringinuse=no``;
* ``Command: dialplan show <exten>@<context>`` for every extension the service sends
  channels to (``There is no existence of ...`` when missing);
* the prompt files where Asterisk reads them and the FastAGI port, given by the caller
  (they are not AMI questions).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from callcenter.pbx.ami import AmiError, AmiLink
from callcenter.runtime import wait_within

REQUIRED_MODULES = ("app_queue", "res_agi", "app_mixmonitor", "app_chanspy", "res_musiconhold")
NEEDED_READ = ("agent", "call", "system", "reporting")
NEEDED_WRITE = ("agent", "call", "originate", "system", "reporting", "command")


@dataclass(frozen=True)
class Check:
    """One line of the report."""
    name: str
    ok: bool
    detail: str = ""
    fix: str = ""

    def line(self) -> str:
        head = f"{'PASS' if self.ok else 'FAIL'}  {self.name}"
        text = f"{head}: {self.detail}" if self.detail else head
        return text if self.ok or not self.fix else f"{text} -- fix: {self.fix}"


@dataclass(frozen=True)
class Expected:
    """What the service needs of this PBX (built from the configs by the caller)."""
    username: str
    queues: Mapping[str, tuple[int, int]]  # name -> (servicelevel, wrapuptime)
    extensions: Sequence[tuple[str, str]]  # (exten, context) the service sends channels to
    modules: Sequence[str] = REQUIRED_MODULES
    read: Sequence[str] = NEEDED_READ
    write: Sequence[str] = NEEDED_WRITE
    prompts_missing: Sequence[str] | None = None  # None: not checked
    prompts_dir: str = ""
    agi: tuple[str, int] | None = None  # host, port Asterisk's AGI(agi://...) reaches
    extra: Mapping[str, Any] = field(default_factory=dict)


def _first(reply: Any) -> dict[str, str]:
    first = reply[0] if isinstance(reply, list) and reply else reply
    return first if isinstance(first, dict) else {}


async def _command(link: AmiLink, command: str) -> tuple[bool, list[str]]:
    """A CLI command: (Asterisk said Success, output lines)."""
    reply = _first(await link.action({"Action": "Command", "Command": command},
                                     idempotent=True))
    lines = str(reply.get("Output", "")).split("\n") if reply.get("Output") else []
    if reply.get("Response") == "Error" and not lines:
        lines = [str(reply.get("Message", "refused"))]
    return reply.get("Response") == "Success", lines


async def _permissions(link: AmiLink, exp: Expected) -> Check:
    _ok, lines = await _command(link, f"manager show user {exp.username}")
    perms: dict[str, set[str]] = {}
    for line in lines:
        key, _, value = line.strip().partition(":")
        if key in ("read perm", "write perm"):
            perms[key] = {p.strip() for p in value.split(",")}
    if not perms:
        return Check("manager user classes", False, "; ".join(lines)[:160] or "no answer",
                     f"grant write = command to [{exp.username}] in manager.conf "
                     "(config/asterisk/manager.conf) and `manager reload`")
    missing_r = [p for p in exp.read if p not in perms.get("read perm", set())]
    missing_w = [p for p in exp.write if p not in perms.get("write perm", set())]
    if missing_r or missing_w:
        what = ", ".join([*(f"read {p}" for p in missing_r), *(f"write {p}" for p in missing_w)])
        return Check("manager user classes", False, f"missing {what}",
                     f"in manager.conf [{exp.username}] read = {','.join(exp.read)}, "
                     f"write = {','.join(exp.write)}; then `manager reload`")
    return Check("manager user classes", True,
                 f"read {','.join(exp.read)}; write {','.join(exp.write)}")


async def _modules(link: AmiLink, exp: Expected) -> list[Check]:
    out = []
    for m in exp.modules:
        reply = _first(await link.action({"Action": "ModuleCheck", "Module": f"{m}.so"},
                                         idempotent=True))
        ok = reply.get("Response") == "Success"
        out.append(Check(f"module {m}", ok, "loaded" if ok else reply.get("Message", "no answer"),
                         f"`module load {m}.so` and load it in modules.conf "
                         f"(Debian: apt-get install asterisk-modules)"))
    return out


async def _queues(link: AmiLink, exp: Expected) -> list[Check]:
    reply = await link.action({"Action": "QueueStatus"}, idempotent=True)
    params = {h.get("Queue", ""): h for h in (reply if isinstance(reply, list) else [])
              if h.get("Event") == "QueueParams"}
    out = []
    for name, (servicelevel, wrapuptime) in exp.queues.items():
        fix_file = f"queues.conf [{name}](hotline-template) as config/asterisk/queues.conf"
        if name not in params:
            out.append(Check(f"queue {name}", False, "not in QueueStatus",
                             f"add {fix_file}, then `queue reload all`"))
            continue
        problems = []
        if str(params[name].get("ServiceLevel")) != str(servicelevel):
            problems.append(f"servicelevel {params[name].get('ServiceLevel')} "
                            f"(callcenter.toml {servicelevel})")
        conf = _first(await link.action({"Action": "GetConfig", "Filename": "queues.conf",
                                         "Category": name}, idempotent=True))
        values = {}
        for k, v in conf.items():
            if k.startswith("Line-"):
                key, _, value = str(v).partition("=")
                values[key.strip()] = value.strip()
        if conf.get("Response") != "Success" or not values:
            problems.append(f"queues.conf not readable ({conf.get('Message', 'no lines')})")
        else:
            want = {"wrapuptime": str(wrapuptime), "setinterfacevar": "yes", "ringinuse": "no"}
            for key, value in want.items():
                if values.get(key, "").lower() != value:
                    problems.append(f"{key}={values.get(key, '(unset)')} (needs {value})")
        out.append(Check(f"queue {name}", not problems,
                         "; ".join(problems) if problems else
                         f"servicelevel {servicelevel}, wrapuptime {wrapuptime}, "
                         "setinterfacevar=yes, ringinuse=no",
                         f"make {fix_file} and callcenter.toml [queues.{name}] agree, then "
                         "`queue reload all`"))
    return out


async def _dialplan(link: AmiLink, exp: Expected) -> list[Check]:
    out = []
    for exten, context in exp.extensions:
        ok, lines = await _command(link, f"dialplan show {exten}@{context}")
        out.append(Check(f"dialplan {exten}@{context}", ok and any("=>" in x for x in lines),
                         "exists" if ok else (lines[0] if lines else "no answer"),
                         "copy config/asterisk/extensions.conf and `dialplan reload`"))
    return out


async def _agi_port(exp: Expected) -> Check | None:
    if exp.agi is None:
        return None
    host, port = exp.agi
    try:
        _, writer = await wait_within(asyncio.open_connection(host, port), 3.0)
        writer.close()
        return Check("FastAGI port", True, f"{host}:{port} accepts connections")
    except (OSError, TimeoutError) as exc:
        return Check("FastAGI port", False, f"{host}:{port}: {exc or type(exc).__name__}",
                     "start `callcenter serve` (its --agi-host must be reachable from "
                     "Asterisk) and set [outbound] agi_url / HOTLINE_AGI to that address")


async def run_checks(link: AmiLink | None, exp: Expected, *, login_error: str = "") -> list[Check]:
    """Every check; ``link`` logged in (None: the login failed with ``login_error``)."""
    checks: list[Check] = []
    if link is None:
        checks.append(Check("AMI login", False, login_error,
                            "check [ami] host/port/username/secret in callcenter.toml against "
                            "manager.conf (enabled = yes, bindaddr, permit) and "
                            "HOTLINE_AMI_SECRET"))
    else:
        try:
            core = _first(await link.action({"Action": "CoreSettings"}, idempotent=True))
            version = (f"; Asterisk {core.get('AsteriskVersion', '?')}, "
                       f"AMI {core.get('AMIversion', '?')}" if core.get("Response") == "Success"
                       else "")
            checks.append(Check("AMI login", True, f"as {exp.username}{version}"))
            checks.append(await _permissions(link, exp))
            checks += await _modules(link, exp)
            checks += await _queues(link, exp)
            checks += await _dialplan(link, exp)
        except AmiError as exc:
            checks.append(Check("AMI", False, str(exc), "see the AMI login line"))
    if exp.prompts_missing is not None:
        missing = list(exp.prompts_missing)
        checks.append(Check("prompts", not missing,
                            f"all present in {exp.prompts_dir}" if not missing else
                            f"{len(missing)} missing in {exp.prompts_dir}: "
                            + ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else ""),
                            "`callcenter prompts build --out <astdatadir>/sounds` (or drop "
                            "recorded files of the same names there)"))
    agi = await _agi_port(exp)
    if agi is not None:
        checks.append(agi)
    return checks


def service_extensions(queues: Iterable[str], department_lines: Iterable[str],
                       operators: Iterable[str] = ("1001",),
                       supervisors: Iterable[str] = ("1901",)) -> list[tuple[str, str]]:
    """The extensions the service and the console send channels to (a sample number for
    the citizen-facing contexts)."""
    queues = list(queues)
    return [*((q, "transfer") for q in queues), *((d, "transfer") for d in department_lines),
            *((q, "hotline-queue") for q in queues),
            ("13800138000", "hotline-outbound"), ("13800138000", "hotline-callback"),
            ("s", "inbound-ivr"), ("s", "inbound"),
            *((o, "agents") for o in operators), *((s, "agents") for s in supervisors)]
