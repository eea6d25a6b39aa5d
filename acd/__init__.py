"""The ACD core, sans-IO: typed AMI events (``events``), the call/queue/agent state with its
literal transition table (``state``), and the figures computed from per-call records (``metrics``).

Fed events that carry their own time; no clock, socket or database.  Imports nothing of the project.
"""
