"""The PBX edge: the guarded AMI link, trace replay, and the PBX simulator with its traffic model.

Turns Asterisk's AMI bytes into typed ``acd.events`` and sends actions back.
May import ``acd`` and the service's plumbing (``callcenter.config``, ``callcenter.logs``); nothing above.
"""
