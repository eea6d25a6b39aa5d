"""The PBX simulator: an AMI/FastAGI peer with an app_queue model that answers as Asterisk 22 does.

Used by the demo, the benchmark and the tests in place of a real Asterisk.
May import ``callcenter.pbx.traffic`` and ``recordings.store``; nothing imports it but entry points and tests.
"""
from callcenter.pbx.sim.app_queue import *
from callcenter.pbx.sim.app_queue import BANNER  # noqa: F401
