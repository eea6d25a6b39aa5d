"""The PBX simulator with a live service on it, as the simulator suites set them up.

:func:`start_sim` serves a :class:`~callcenter.pbx.sim.Pbx` on a free port (AMI user
``hotline``, secret ``pw``); :func:`sim_settings` points the service at it (or at a
proxy in front of it), every queue with a 15 s service level and 3 s wrap-up;
:func:`sim_service` runs the service on the simulator's virtual clock.  Each suite
starts and stops them itself (some start the service late, kill it or put a proxy
between).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from acd.state import QueueConfig
from callcenter.config import Settings, load
from callcenter.pbx.sim import Pbx, PbxSimServer
from callcenter.service import Service

SIM_USER, SIM_SECRET = "hotline", "pw"


async def start_sim(pbx: Pbx, speed: float, queue_log: Path | None = None, *,
                    hold_clock: bool = True) -> PbxSimServer:
    """``pbx`` served on a free port at ``speed`` times real time, writing Asterisk's
    ``queue_log`` there when given.  Its clock is held (until ``release_clock()``: the
    service first sees the PBX as it was) unless ``hold_clock`` is false."""
    server = PbxSimServer(pbx, port=0, users={SIM_USER: SIM_SECRET}, speed=speed,
                          queue_log=queue_log)
    if hold_clock:
        server.hold_clock()
    await server.start()
    return server


def sim_settings(port: int, db_url: str, queues: Iterable[str], *,
                 queue_log: Path | None = None) -> Settings:
    """The service's settings for a simulator's AMI on ``port``, storing in ``db_url``;
    it reads ``queue_log`` (to rebuild what it did not see) when given."""
    settings = load(env={})
    settings.ami.port, settings.ami.secret = port, SIM_SECRET
    settings.database_url = db_url
    settings.queues = {q: QueueConfig(15, 3) for q in queues}
    if queue_log is not None:
        settings.queue_log = str(queue_log)
    return settings


def sim_service(server: PbxSimServer, settings: Settings) -> Service:
    """A service (not started) on ``server``'s virtual clock."""
    return Service(settings, clock=server.virtual_now)
