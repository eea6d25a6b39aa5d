"""The service and its plumbing: config, database, migrations, logs, the composition root
(``service``), and at the top the entry points (``cli``, ``demo``, ``bench``, ``telephony``).

Wings inside it: ``pbx/`` (the PBX edge) and ``orders/`` (the work-order domain).  The plumbing
imports only ``acd`` and itself; only the entry points import the console, the IVR and recordings.
"""
