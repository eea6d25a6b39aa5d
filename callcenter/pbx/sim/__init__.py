"""The PBX simulator: an AMI/FastAGI peer with an app_queue model that answers as Asterisk 22 does.

``wire`` (AMI framing) · ``model`` (queues, members, channels, calls) · ``app_queue`` (the sans-IO
core, :class:`Pbx`) · ``outbound`` (originates, ChanSpy, MixMonitor) · ``agi`` (the FastAGI client)
· ``server`` (the TCP edge and ``callcenter pbx-sim``).  May import ``callcenter.pbx.traffic`` and
``recordings.store`` (to write MixMonitor WAVs); only entry points and tests import it.
"""

from callcenter.pbx.sim.agi import AgiOutcome, QueueEnd, run_agi
from callcenter.pbx.sim.app_queue import Pbx
from callcenter.pbx.sim.model import (
    AgiRun,
    CitizenCall,
    PbxConfig,
    QueueConfig,
    Recording,
    Reservation,
    SpyCall,
)
from callcenter.pbx.sim.server import (
    AmiSession,
    PbxSimServer,
    add_arguments,
    build_pbx,
    main_from_args,
    pregenerate,
    run_pbx_sim,
)
from callcenter.pbx.sim.wire import (
    ALL_EVENTS,
    BANNER,
    EVENT_FLAGS,
    Frame,
    event_mask,
    frame_dict,
    mask_number,
    parse_frame,
)

__all__ = [
    "ALL_EVENTS",
    "BANNER",
    "EVENT_FLAGS",
    "AgiOutcome",
    "AgiRun",
    "AmiSession",
    "CitizenCall",
    "Frame",
    "Pbx",
    "PbxConfig",
    "PbxSimServer",
    "QueueConfig",
    "QueueEnd",
    "Recording",
    "Reservation",
    "SpyCall",
    "add_arguments",
    "build_pbx",
    "event_mask",
    "frame_dict",
    "main_from_args",
    "mask_number",
    "parse_frame",
    "pregenerate",
    "run_agi",
    "run_pbx_sim",
]
