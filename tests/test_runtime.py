"""The diagnoses every long-running process carries (``callcenter.runtime``)."""

from __future__ import annotations

import asyncio
from pathlib import Path


class _Kept:
    """A type of this test only, to be found in the census by name."""


async def test_the_gc_census_counts_what_the_collector_tracks_by_type(tmp_path: Path) -> None:
    """HOTLINE_GC_CENSUS's turn: the tracked objects by generation, and among the oldest
    the commonest types: 30,000 objects of one type kept alive lead the list."""
    import gc

    from callcenter.runtime import _gc_census, periodic

    kept = [_Kept() for _ in range(30_000)]
    gc.collect()  # all of them into the oldest generation
    path = tmp_path / "census.txt"
    async with periodic("gc-census", 0.05, _gc_census(str(path)), failed="census failed"):
        for _ in range(100):
            await asyncio.sleep(0.05)
            if path.exists() and "_Kept" in path.read_text():
                break
    head, *kinds = path.read_text().split("== ")[1].splitlines()
    assert "tracked [" in head and "frozen" in head
    counts = {line.split()[1]: int(line.split()[0]) for line in kinds}
    assert counts["_Kept"] >= 30_000 and len(kept) == 30_000
