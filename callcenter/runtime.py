"""What every entry point shares: the one-line user error and running until SIGINT/SIGTERM.

Imported by ``callcenter.cli``, ``callcenter.demo`` and the sub-commands of other wings
(``recordings.cli``) so that none of them imports the CLI module itself.
"""

from __future__ import annotations

import asyncio
import signal


class CliError(Exception):
    """A one-line message for the user; the CLI prints it and exits with code 2."""


async def run_until_signalled() -> None:
    """Wait until the process gets SIGINT or SIGTERM (returns; never raises for them)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    await stop.wait()
