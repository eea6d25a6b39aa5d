"""``callcenter check-asterisk`` against the PBX simulator playing a healthy Asterisk 22
and one that lacks a module, a queue, a queue setting, a prompt, a dialplan extension,
a manager class or the FastAGI port.  The simulator answers CoreSettings, ModuleCheck,
GetConfig, QueueStatus and ``Command`` (``dialplan show``, ``manager show user``) in
Asterisk's own shapes (callcenter/pbx/sim/admin.py)."""

from __future__ import annotations

import asyncio
import tomllib
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from callcenter.cli import main
from callcenter.config import load
from callcenter.orders.lifecycle import State
from callcenter.pbx.sim.admin import Dialplan
from callcenter.pbx.sim.model import QueueConfig
from callcenter.pbx.sim.server import PbxSimServer, build_pbx
from callcenter.telephony import check_asterisk
from ivr.menus import DEFAULT_CONFIG
from ivr.prompts import prompt_names

QUEUES = [QueueConfig("hotline", servicelevel=15, wrapuptime=3),
          QueueConfig("hotline-en", servicelevel=15, wrapuptime=3)]


def write_prompts(root: Path) -> list[str]:
    with open(DEFAULT_CONFIG, "rb") as f:
        names = prompt_names(tomllib.load(f), [s.value for s in State])
    for lang in ("zh", "en"):
        for n in names:
            path = root / lang / f"{n}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            with wave.open(str(path), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(8000)
                w.writeframes(b"\0\0" * 80)
    return names


class Rig:
    def __init__(self, sim: PbxSimServer, agi: asyncio.Server, sounds: Path,
                 config: Path) -> None:
        self.sim, self.agi, self.sounds, self.config = sim, agi, sounds, config

    @property
    def settings(self) -> Any:
        return load(self.config)

    async def run(self, **kwargs: Any) -> dict[str, Any]:
        port = self.agi.sockets[0].getsockname()[1] if self.agi.sockets else 1
        checks = await check_asterisk(self.settings, agi=("127.0.0.1", port), **kwargs)
        return {c.name: c for c in checks}


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    sim = PbxSimServer(build_pbx(seed=1, agents=0, queues=QUEUES), port=0,
                       users={"hotline": "pw"}, speed=1.0)
    await sim.start()
    agi = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    sounds = tmp_path / "sounds"
    write_prompts(sounds)
    config = tmp_path / "callcenter.toml"
    config.write_text(f'[ami]\nport = {sim.port}\nsecret = "pw"\n'
                      f'[prompts]\nsounds = "{sounds}"\n', encoding="utf-8")
    yield Rig(sim, agi, sounds, config)
    agi.close()
    await agi.wait_closed()
    await sim.stop()


async def test_a_healthy_pbx_passes_every_check(rig: Rig) -> None:
    checks = await rig.run()
    failed = [c.line() for c in checks.values() if not c.ok]
    assert failed == []
    assert checks["AMI login"].line() == "PASS  AMI login: as hotline; Asterisk 22.10.1, AMI 11.0.0"
    assert {"AMI login", "manager user classes", "module app_queue", "module res_musiconhold",
            "queue hotline", "queue hotline-en", "dialplan hotline@transfer",
            "dialplan 8101@transfer", "dialplan hotline-en@hotline-queue",
            "dialplan 13800138000@hotline-outbound", "prompts", "FastAGI port"} <= set(checks)


async def test_each_fault_is_one_failing_line_with_its_fix(rig: Rig) -> None:
    admin = rig.sim.pbx.admin
    del admin.modules["app_chanspy.so"]
    admin.queue_options["hotline"] = {"wrapuptime": "5", "ringinuse": "yes"}
    admin.manager_users["hotline"] = ("agent,call,system,reporting",
                                      "agent,call,originate,system,reporting,command-no")
    (rig.sounds / "en" / "hotline" / "survey.wav").unlink()
    old = (Path(__file__).resolve().parents[2] / "config" / "asterisk" / "extensions.conf"
           ).read_text(encoding="utf-8").replace("exten => _[a-z].,1,NoOp(transfer to queue",
                                                 "exten => _hotline.,1,NoOp(transfer to queue")
    admin.dialplan = Dialplan.parse(old)
    checks = await rig.run()
    failed = {n: c.line() for n, c in checks.items() if not c.ok}
    assert set(failed) == {"module app_chanspy", "queue hotline", "manager user classes",
                           "prompts", "dialplan hotline@transfer",
                           "dialplan hotline-en@transfer"}
    assert failed["module app_chanspy"] == (
        "FAIL  module app_chanspy: Module not loaded -- fix: `module load app_chanspy.so` "
        "and load it in modules.conf (Debian: apt-get install asterisk-modules)")
    assert "wrapuptime=5 (needs 3)" in failed["queue hotline"]
    assert "ringinuse=yes (needs no)" in failed["queue hotline"]
    assert "missing write command" in failed["manager user classes"]
    assert "en/hotline/survey" in failed["prompts"]
    assert "There is no existence of hotline@transfer extension" in failed[
        "dialplan hotline@transfer"]


async def test_a_pbx_without_a_queue_or_reachable_agi(tmp_path: Path, rig: Rig) -> None:
    sim = PbxSimServer(build_pbx(seed=1, agents=0, queues=QUEUES[:1]), port=0,
                       users={"hotline": "pw"})
    await sim.start()
    rig.config.write_text(f'[ami]\nport = {sim.port}\nsecret = "pw"\n'
                          f'[prompts]\nsounds = "{rig.sounds}"\n', encoding="utf-8")
    rig.agi.close()
    await rig.agi.wait_closed()
    try:
        checks = await rig.run()
    finally:
        await sim.stop()
    assert checks["queue hotline-en"].detail == "not in QueueStatus"
    assert not checks["FastAGI port"].ok and "callcenter serve" in checks["FastAGI port"].fix
    assert checks["queue hotline"].ok


async def test_the_command_exits_0_only_when_all_pass(rig: Rig, capsys: Any) -> None:
    port = rig.agi.sockets[0].getsockname()[1]
    text = rig.config.read_text(encoding="utf-8")
    rig.config.write_text(text + f'[outbound]\nagi_url = "agi://127.0.0.1:{port}"\n',
                          encoding="utf-8")
    assert await asyncio.to_thread(main, ["--config", str(rig.config), "check-asterisk"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out and all(line.startswith("PASS  ") for line in out)
    rig.config.write_text(text.replace('secret = "pw"', 'secret = "wrong"'), encoding="utf-8")
    assert await asyncio.to_thread(main, ["--config", str(rig.config), "check-asterisk"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("FAIL  AMI login: ") and "manager.conf" in out[0]


async def test_serve_runs_the_checks_at_start_and_logs_each_failure(rig: Rig) -> None:
    from types import SimpleNamespace

    from structlog.testing import capture_logs

    from callcenter.pbx.ami import AmiLink
    from callcenter.telephony import startup_checks

    del rig.sim.pbx.admin.modules["res_musiconhold.so"]
    port = rig.agi.sockets[0].getsockname()[1]
    with rig.config.open("a", encoding="utf-8") as f:
        f.write(f'[outbound]\nagi_url = "agi://127.0.0.1:{port}"\n')
    settings = rig.settings
    link = AmiLink("127.0.0.1", settings.ami.port, "hotline", "pw", events="off",
                   on_event=lambda h, t: None)
    await link.connect_once()
    try:
        with capture_logs() as logs:
            await startup_checks(SimpleNamespace(link=link, settings=settings), None)
    finally:
        await link.stop()
    failed = [e for e in logs if e["event"] == "asterisk_check_failed"]
    assert [e["check"] for e in failed] == ["module res_musiconhold"]
    assert "module load res_musiconhold.so" in failed[0]["fix"]
    [summary] = [e for e in logs if e["event"] == "asterisk_checks"]
    assert summary["failed"] == len(failed)
