"""The simulator's FastAGI client: runs an IVR script on a call as Asterisk's ``AGI()`` does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple

import structlog

from callcenter.runtime import wait_within

log = structlog.get_logger(__name__)


class AgiOutcome(NamedTuple):
    """What a FastAGI script did with a call: variables set, the queue entered (if any)."""
    variables: dict[str, str]
    queue: str | None
    commands: list[str]


class QueueEnd(NamedTuple):
    """How an ``EXEC Queue`` ended for :func:`run_agi`'s ``on_queue``: the result to reply
    (0: the caller is still on the line, -1: hung up), channel variables app_queue set
    (``MEMBERINTERFACE``) and the keys the caller presses from then on."""
    result: int
    variables: dict[str, str]
    keys: list[str]


async def run_agi(url: str, headers: Mapping[str, str], keys: Sequence[str], *,
                  timeout: float = 10.0, variables: Mapping[str, str] | None = None,
                  on_queue: Callable[[str, dict[str, str]], Any] | None = None,
                  alive: Callable[[], bool] | None = None,
                  missing_prompts: Collection[str] = (),
                  source: str | None = None) -> AgiOutcome:
    """Play Asterisk's side of ``AGI(agi://host:port/script)``: send the agi_ headers,
    answer each command, press ``keys`` one per GET DATA (then time out).

    ``GET VARIABLE`` answers from ``variables`` and what the script set.  ``EXEC Queue``
    ends the conversation unless ``on_queue(queue, variables)`` is given: it is awaited
    (the caller is in Queue()) and its :class:`QueueEnd` is the reply; on 0 the script
    goes on (``GET VARIABLE MEMBERINTERFACE``, the survey's GET DATA ...), on -1 the
    channel is gone.  A prompt in ``missing_prompts`` is answered as Asterisk 22 answers
    a file it cannot find: ``STREAM FILE`` -> ``200 result=-1 endpos=0`` (the channel
    stays up), ``GET DATA`` still collects keys.  ``source``: the local address to connect
    from (a PBX on another address; any 127.x.y.z is this host on Linux).  Ends at ``HANGUP`` (after its reply) or when the script closes;
    once ``alive()`` is false (the channel was hung up) the next command gets
    ``200 result=-1`` and the connection is closed.
    """
    rest = url.removeprefix("agi://")
    hostport, _, script = rest.partition("/")
    host, _, port = hostport.partition(":")
    reader, writer = await wait_within(
        asyncio.open_connection(host or "127.0.0.1", int(port or 4573),
                                local_addr=(source, 0) if source else None), timeout)
    chan_vars: dict[str, str] = dict(variables or {})
    set_vars: dict[str, str] = {}
    queue: str | None = None
    commands: list[str] = []
    pending = list(keys)
    try:
        head = {"agi_network": "yes", "agi_network_script": script, "agi_request": url,
                **headers}
        writer.write("".join(f"{k}: {v}\n" for k, v in head.items()).encode() + b"\n")
        await writer.drain()
        while line := await wait_within(reader.readline(), timeout):
            command = line.decode().strip()
            if not command:
                continue
            commands.append(command)
            reply = "200 result=0"
            done = False
            if alive is not None and not alive():
                reply, done = "200 result=-1", True
            elif command.startswith("STREAM FILE ") and \
                    command.split(" ", 3)[2] in missing_prompts:
                reply = "200 result=-1 endpos=0"
            elif command.startswith("GET DATA"):
                key = pending.pop(0) if pending else ""
                reply = f"200 result={key}" if key else "200 result= (timeout)"
            elif command.startswith("SET VARIABLE "):
                _, _, name, value = (command + " ").split(" ", 3)
                set_vars[name] = chan_vars[name] = value.strip().strip('"')
            elif command.startswith("GET VARIABLE "):
                name = command.split(" ", 2)[2].strip()
                value = chan_vars.get(name)
                reply = f"200 result=1 ({value})" if value is not None else "200 result=0"
            elif command.startswith("EXEC Queue "):
                queue = command.split(" ", 2)[2].split(",", 1)[0].strip().strip('"')
                if on_queue is None:
                    break  # the caller is in Queue(); the script's part is over
                end: QueueEnd = await on_queue(queue, dict(set_vars))
                reply = f"200 result={end.result}"
                chan_vars.update(end.variables)
                pending = list(end.keys)
                done = end.result < 0
            elif command == "HANGUP":
                reply, done = "200 result=1", True
            writer.write(f"{reply}\n".encode())
            await writer.drain()
            if done:
                break
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # the script closed the connection: it is done
    finally:
        writer.close()
    return AgiOutcome(set_vars, queue, commands)
