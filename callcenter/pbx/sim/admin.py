"""What a PBX administrator's tools ask Asterisk, answered as Asterisk 22 does: a mixin
for :class:`~callcenter.pbx.sim.app_queue.Pbx` (``callcenter check-asterisk`` runs
against it in the tests).

Actions (exact shapes from Asterisk's ``main/manager.c`` and ``main/pbx.c``):

* ``CoreSettings`` -- ``AMIversion``, ``AsteriskVersion``, ``SystemName``, ...
* ``ModuleCheck Module: app_queue.so`` -- ``Response: Success`` + ``Version:`` when
  loaded, else ``Response: Error`` / ``Message: Module not loaded``.
* ``GetConfig Filename: queues.conf [Category: q]`` -- ``Category-000000: q`` and
  ``Line-000000-000001: name=value`` lines, the template's variables inherited.
* ``Command``: ``dialplan show [exten@]context`` (Asterisk's pattern rules: ``X`` 0-9,
  ``Z`` 1-9, ``N`` 2-9 in either case, ``[...]`` sets, ``.`` one or more, ``!`` zero
  or more, ``-`` ignored; an unknown extension is ``Response: Error``,
  ``Message: Command output follows``, ``Output: There is no existence of
  exten@context extension``), ``module show like <m>``, ``manager show user <u>``,
  ``core show version``; anything else goes to app_queue's ``Command`` (``queue show``).

A PBX with faults: ``admin.modules`` (drop one), ``admin.queue_options[q]`` (override
``queues.conf`` values of a queue), ``admin.dialplan`` (load another
``extensions.conf``), ``admin.manager_users`` (the ``read``/``write`` classes).  A
queue the PBX lacks is one the core was built without.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from callcenter.pbx.sim.wire import ActionFields, error_frame, response_frame

EXTENSIONS_CONF = Path(__file__).resolve().parents[3] / "config" / "asterisk" / "extensions.conf"
VERSION = "22.10.1"
MODULES = {
    "app_queue.so": "True Call Queueing", "res_agi.so": "Asterisk Gateway Interface (AGI)",
    "app_mixmonitor.so": "Mixed Audio Monitoring Application",
    "app_chanspy.so": "Listen to the audio of an active channel",
    "res_musiconhold.so": "Music On Hold Resource", "chan_pjsip.so": "PJSIP Channel Driver",
    "pbx_config.so": "Text Extension Configuration", "func_sha1.so": "SHA-1 computation dialplan function",
}
#: The order ``manager show user`` prints classes in (manager.c ``perms[]``).
PERMS = ("system", "call", "log", "verbose", "command", "agent", "user", "config", "dtmf",
         "reporting", "cdr", "dialplan", "originate", "agi", "cc", "aoc", "test", "security",
         "message")


def extension_match(pattern: str, exten: str) -> bool:
    """Whether dialplan extension ``pattern`` takes ``exten`` (pbx.c ``_extension_match_core``,
    E_MATCH)."""
    if not pattern.startswith("_"):
        return pattern.replace("-", "") == exten.replace("-", "")
    p, d = pattern[1:], exten.replace("-", "")
    i = j = 0
    while True:
        while i < len(p) and p[i] == "-":  # "eye candy" outside [...]
            i += 1
        if j >= len(d) or i >= len(p):
            break
        c = p[i]
        if c == "[":
            end = p.find("]", i)
            if end < 0:
                return False
            chars, k, hit = p[i + 1:end], 0, False
            while k < len(chars):
                if k + 2 < len(chars) and chars[k + 1] == "-":
                    hit = hit or chars[k] <= d[j] <= chars[k + 2]
                    k += 3
                else:
                    hit = hit or d[j] == chars[k]
                    k += 1
            if not chars:  # an empty set is ignored
                i = end + 1
                continue
            if not hit:
                return False
            i = end
        elif c in "nN":
            if not "2" <= d[j] <= "9":
                return False
        elif c in "xX":
            if not "0" <= d[j] <= "9":
                return False
        elif c in "zZ":
            if not "1" <= d[j] <= "9":
                return False
        elif c in ".!":
            return True
        elif c != d[j]:
            return False
        i += 1
        j += 1
    if j < len(d):
        return False
    return i >= len(p) or p[i] == "!"


@dataclass
class Dialplan:
    """``extensions.conf`` as ``dialplan show`` sees it: context -> [(exten, [app, ...])]."""
    contexts: dict[str, list[tuple[str, list[str]]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Dialplan:
        contexts: dict[str, list[tuple[str, list[str]]]] = {}
        current: list[tuple[str, list[str]]] | None = None
        for raw in text.splitlines():
            line = raw.split(";", 1)[0].strip()
            if line.startswith("[") and "]" in line:
                name = line[1:line.index("]")]
                current = None if name in ("general", "globals") else contexts.setdefault(
                    name, [])
                continue
            if current is None or "=>" not in line:
                continue
            kind, _, rest = (part.strip() for part in line.partition("=>"))
            if kind == "exten":
                exten, _, tail = rest.partition(",")
                current.append((exten.strip(), [tail.partition(",")[2]]))
            elif kind == "same" and current:
                current[-1][1].append(rest.partition(",")[2])
        return cls(contexts)

    @classmethod
    def load(cls, path: Path = EXTENSIONS_CONF) -> Dialplan:
        return cls.parse(path.read_text(encoding="utf-8"))

    def matching(self, context: str, exten: str) -> list[tuple[str, list[str]]]:
        return [(e, apps) for e, apps in self.contexts.get(context, [])
                if extension_match(e, exten)]

    def show(self, arg: str) -> tuple[bool, list[str]]:
        """``dialplan show <arg>``: (success, output lines) as pbx.c prints them."""
        exten, _, context = arg.rpartition("@") if "@" in arg else ("", "", arg)
        if context not in self.contexts:
            return False, [f"There is no existence of '{context}' context"]
        found = self.matching(context, exten) if exten else self.contexts[context]
        if not found:
            return False, [f"There is no existence of {exten}@{context} extension"]
        lines = [f"[ Context '{context}' created by 'pbx_config' ]"]
        prios = 0
        for e, apps in found:
            for n, app in enumerate(apps, 1):
                head = f"'{e}' =>" if n == 1 else ""
                lines.append(f"  {head:<17} {f'{n}. {app}':<45} [extensions.conf]")
                prios += 1
        lines += ["", (f"-= {len(found)} extension{'s' if len(found) != 1 else ''} ({prios} "
                      f"priorit{'ies' if prios != 1 else 'y'}) in 1 context. =-")]
        return True, lines


@dataclass
class PbxAdmin:
    """The administrator's view of the simulated PBX; change it to play a faulty one."""
    modules: dict[str, str] = field(default_factory=lambda: dict(MODULES))
    dialplan: Dialplan = field(default_factory=Dialplan.load)
    queue_options: dict[str, dict[str, str]] = field(default_factory=dict)
    manager_users: dict[str, tuple[str, str]] = field(default_factory=lambda: {
        "hotline": ("agent,call,system,reporting",
                    "agent,call,originate,system,reporting,command")})


class AdminActions:
    """The mixin: ``admin_handlers()`` joins the Pbx's action table."""

    queues: dict  # the Pbx's queues (name -> Queue with .cfg)
    now: float
    started: float

    @property
    def admin(self) -> PbxAdmin:
        state = self.__dict__.get("_admin")
        if state is None:
            state = self.__dict__["_admin"] = PbxAdmin()
        return state

    def admin_handlers(self, command: Callable[[ActionFields, str], str]
                       ) -> dict[str, Callable[[ActionFields, str], str]]:
        """``command``: the core's own ``Command`` handler, for what is not answered here."""

        def cmd(f: ActionFields, aid: str) -> str:
            return self._admin_command(f, aid, command)

        return {"coresettings": self._act_core_settings, "modulecheck": self._act_module_check,
                "getconfig": self._act_get_config, "command": cmd}

    def _act_core_settings(self, f: ActionFields, aid: str) -> str:
        return response_frame(
            aid, AMIversion="11.0.0", AsteriskVersion=VERSION, SystemName="",
            CoreMaxCalls=0, CoreMaxLoadAvg="0.000000", CoreRunUser="asterisk",
            CoreRunGroup="asterisk", CoreMaxFilehandles=0, CoreRealTimeEnabled="No",
            CoreCDRenabled="Yes", CoreHTTPenabled="No", SoundsSearchCustomDir="No")

    def _act_module_check(self, f: ActionFields, aid: str) -> str:
        name = f.get("module")
        if (name if name.endswith(".so") else name + ".so") not in self.admin.modules:
            return error_frame(aid, "Module not loaded")
        return response_frame(aid, Version="")

    def _queue_lines(self, name: str) -> list[tuple[str, str]]:
        cfg = self.queues[name].cfg
        values = {"strategy": cfg.strategy, "servicelevel": str(cfg.servicelevel),
                  "timeout": str(int(cfg.timeout)), "wrapuptime": str(cfg.wrapuptime),
                  "ringinuse": "no", "setinterfacevar": "yes", "musicclass": "hotline",
                  **self.admin.queue_options.get(name, {})}
        return list(values.items())

    def _act_get_config(self, f: ActionFields, aid: str) -> str:
        if f.get("filename") != "queues.conf":
            return error_frame(aid, "Config file not found")
        wanted = f.get("category")
        names = [n for n in self.queues if not wanted or n == wanted]
        lines = [f"Category-{i:06d}: {n}\r\n" + "".join(
            f"Line-{i:06d}-{j:06d}: {k}={v}\r\n" for j, (k, v) in enumerate(self._queue_lines(n)))
            for i, n in enumerate(names)]
        if wanted and not names:
            lines = ["No categories found\r\n"]
        return response_frame(aid)[:-2] + "".join(lines) + "\r\n"

    def _admin_command(self, f: ActionFields, aid: str,
                       fallback: Callable[[ActionFields, str], str]) -> str:
        words = f.get("command").split()
        ok = True
        if words[:2] == ["dialplan", "show"] and len(words) <= 3:
            ok, lines = self.admin.dialplan.show(words[2] if len(words) == 3 else "")
        elif words[:3] == ["module", "show", "like"] and len(words) == 4:
            found = sorted(m for m in self.admin.modules if words[3] in m)
            lines = [(f"{'Module':<30} {'Description':<40} {'Use Count':<10} {'Status':<11} "
                     "Support Level")]
            lines += [f"{m:<30} {self.admin.modules[m][:40]:<40} {0:<10} {'Running':<11} "
                      f"{'core':>13}" for m in found]
            lines.append(f"{len(found)} modules loaded")
        elif words[:3] == ["manager", "show", "user"] and len(words) == 4:
            perms = self.admin.manager_users.get(words[3])
            if perms is None:
                lines = [f"There is no manager called {words[3]}"]
            else:
                read, write = (",".join(p for p in PERMS if p in set(x.split(","))) or "<none>"
                               for x in perms)
                lines = ["", f"          username: {words[3]}", "            secret: <Set>",
                         "               ACL: yes", f"         read perm: {read}",
                         f"        write perm: {write}", "   displayconnects: no",
                         "allowmultiplelogin: yes", "         Variables: "]
        elif words[:3] == ["core", "show", "version"]:
            lines = [f"Asterisk {VERSION} built by pbx-sim"]
        else:
            return fallback(f, aid)
        head = response_frame(aid, "Success" if ok else "Error",
                              Message="Command output follows")[:-2]
        return head + "".join(f"Output: {line}\r\n" for line in lines) + "\r\n"
