"""The browser side: the operator console, the wallboard and the orders pages, their JSON API,
``/ws`` live updates, accounts and sessions, listen-in.

May import the service, the order domain, ``acd``, ``ivr`` and ``recordings``; ``server.make_app``
is imported only by entry points and tests.
"""
