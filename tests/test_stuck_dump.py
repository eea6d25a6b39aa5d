"""The suite's own watch on a test that stands still (tests/conftest.py): what it prints
must name each task and every await of its chain, so the next rare hang can be traced."""

from __future__ import annotations

import asyncio
import io
import threading

from tests.conftest import dump_loops


async def _inner(ev: asyncio.Event) -> None:
    await ev.wait()


async def _outer(ev: asyncio.Event) -> None:
    await _inner(ev)


async def test_the_dump_names_each_task_and_its_chain_of_awaits() -> None:
    ev = asyncio.Event()
    stuck = asyncio.create_task(_outer(ev), name="stuck-one")
    await asyncio.sleep(0)
    buf = io.StringIO()
    dumper = threading.Thread(target=dump_loops, args=("probe", buf, 2.0))
    dumper.start()
    while dumper.is_alive():  # the loop stays free to answer
        await asyncio.sleep(0.02)
    text = buf.getvalue()
    assert "1 running event loop(s)" in text
    chain = text[text.index("task stuck-one"):]
    assert chain.index("in _outer") < chain.index("in _inner") < chain.index("in wait")
    assert "(busy" not in text
    ev.set()
    await stuck
