"""The work-order domain: the lifecycle table (受理 … 评价), the working-day calendar, the store and supervision.

``lifecycle``, ``calendar`` and ``supervision`` are pure; ``store`` writes them to the database.
May import ``callcenter.db`` and ``callcenter.config``; never ``agent_console``, ``ivr`` or ``recordings``.
"""
