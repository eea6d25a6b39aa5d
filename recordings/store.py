"""Call recordings on disk: an index by call uniqueid and work order, safe paths, retention.

A recording is a WAV file under one root, at ``YYYY-MM-DD/<uniqueid>.wav`` (the
date is the UTC day of the call's start, which Asterisk's uniqueid
``<epoch>.<sequence>`` carries; MixMonitor is configured to write there).  The
index is rebuilt by :meth:`RecordingStore.scan` and orders are linked to calls
with :meth:`RecordingStore.link_order` (an order's ``call_id`` is a uniqueid).

Every name that comes from outside goes through :meth:`RecordingStore.resolve`,
which refuses NUL bytes, absolute paths, ``..`` segments, backslashes and
symlinks that lead out of the root.  Retention is a pure plan
(:func:`retention_plan`) applied by :meth:`RecordingStore.apply_retention`,
which by default only reports what it would remove.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
import wave
from array import array
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import structlog

log = structlog.get_logger("recordings")

UNIQUEID = re.compile(r"\A\d{1,12}\.\d{1,9}\Z")  # \Z: "$" would let a trailing LF through
#: A recording's key: the Uniqueid, or ``<pbx>:<Uniqueid>`` for a call off the home PBX.
RECORDING_KEY = re.compile(r"\A(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,31}:)?\d{1,12}\.\d{1,9}\Z")


class UnsafePath(ValueError):
    """A recording name that would leave the recordings root."""


@dataclass(frozen=True)
class Recording:
    uniqueid: str
    path: str  # relative to the root, POSIX separators
    size: int
    started_at: float  # epoch seconds
    order_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RetentionReport:
    dry_run: bool
    cutoff: float
    removed: tuple[Recording, ...]  # removed, or that would be with dry_run
    kept_for_orders: tuple[Recording, ...]  # old enough but held by an order

    @property
    def bytes(self) -> int:
        return sum(r.size for r in self.removed)


def started_at(uniqueid: str) -> float:
    """The call's start from its uniqueid ``<epoch>.<sequence>`` (or a call's key on a
    PBX other than the home one, ``<pbx>:<epoch>.<sequence>``)."""
    bare = uniqueid.rpartition(":")[2]
    if not UNIQUEID.match(bare):
        raise ValueError(f"not an Asterisk uniqueid: {uniqueid!r}")
    return float(bare.split(".", 1)[0])


def path_for(uniqueid: str) -> str:
    """Where the recording of call ``uniqueid`` lives, relative to the root."""
    day = time.strftime("%Y-%m-%d", time.gmtime(started_at(uniqueid)))
    return f"{day}/{uniqueid}.wav"


def retention_plan(recordings: Iterable[Recording], now: float, days: float, *,
                   hold: Collection[str] = ()) -> tuple[list[Recording], list[Recording]]:
    """(to remove, kept because an order in ``hold`` still needs it) for recordings
    started more than ``days`` days before ``now``."""
    cutoff = now - days * 86400
    old = [r for r in recordings if r.started_at < cutoff]
    held = [r for r in old if r.order_ids & set(hold)]
    return [r for r in old if r not in held], held


class RecordingStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self._by_uniqueid: dict[str, Recording] = {}
        self._orders: dict[str, set[str]] = {}  # uniqueid -> order ids

    def resolve(self, name: str) -> Path:
        """The absolute path of ``name`` inside the root; raises :class:`UnsafePath`."""
        if not name or "\x00" in name or "\\" in name:
            raise UnsafePath(f"refused recording name {name!r}")
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or name.startswith("~"):
            raise UnsafePath(f"refused recording name {name!r}")
        full = (self.root / rel).resolve()  # follows symlinks
        if not full.is_relative_to(self.root) or full == self.root:
            raise UnsafePath(f"recording name {name!r} leads outside the root")
        return full

    # the index

    def add(self, uniqueid: str, path: str | None = None) -> Recording:
        """Index the file of call ``uniqueid`` (at :func:`path_for` unless given)."""
        rel = path or path_for(uniqueid)
        full = self.resolve(rel)
        rec = Recording(uniqueid, rel, full.stat().st_size, started_at(uniqueid),
                        frozenset(self._orders.get(uniqueid, ())))
        self._by_uniqueid[uniqueid] = rec
        return rec

    def scan(self) -> int:
        """Rebuild the index from the files under the root; the number found."""
        self._by_uniqueid.clear()
        for path in sorted(self.root.rglob("*.wav")):
            uniqueid = path.stem
            if not UNIQUEID.match(uniqueid) or path.is_symlink():
                continue
            rel = path.relative_to(self.root)
            if len(rel.parts) == 3:  # <pbx>/YYYY-MM-DD/<uid>.wav: a call off the home PBX
                uniqueid = f"{rel.parts[0]}:{uniqueid}"
            try:
                self.add(uniqueid, rel.as_posix())
            except (UnsafePath, OSError):
                continue
        return len(self._by_uniqueid)

    def link_order(self, uniqueid: str, order_id: str) -> None:
        self._orders.setdefault(uniqueid, set()).add(order_id)
        rec = self._by_uniqueid.get(uniqueid)
        if rec is not None:
            self._by_uniqueid[uniqueid] = Recording(
                rec.uniqueid, rec.path, rec.size, rec.started_at,
                frozenset(self._orders[uniqueid]))

    def get(self, uniqueid: str) -> Recording | None:
        return self._by_uniqueid.get(uniqueid)

    def for_order(self, order_id: str) -> list[Recording]:
        return sorted((r for r in self._by_uniqueid.values() if order_id in r.order_ids),
                      key=lambda r: r.started_at)

    def file(self, uniqueid: str) -> Path | None:
        """The safe absolute path of a call's recording, None when not indexed."""
        rec = self._by_uniqueid.get(uniqueid)
        return None if rec is None else self.resolve(rec.path)

    def __len__(self) -> int:
        return len(self._by_uniqueid)

    # retention

    def apply_retention(self, now: float, days: float, *, dry_run: bool = True,
                        hold: Collection[str] = ()) -> RetentionReport:
        """Remove recordings older than ``days`` (only report them with ``dry_run``).

        Recordings linked to an order id in ``hold`` (e.g. orders still open or
        under appeal) are kept whatever their age.
        """
        remove, held = retention_plan(self._by_uniqueid.values(), now, days, hold=hold)
        if not dry_run:
            for rec in remove:
                try:
                    self.resolve(rec.path).unlink()
                except FileNotFoundError:
                    pass
                del self._by_uniqueid[rec.uniqueid]
        report = RetentionReport(dry_run, now - days * 86400, tuple(remove), tuple(held))
        log.info("recordings_retention", dry_run=dry_run, days=days, count=len(remove),
                 bytes=report.bytes, held=len(held))
        return report


def write_wav(path: str | Path, seconds: float, tone_hz: float = 440.0, *,
              rate: int = 8000) -> Path:
    """Write a small real WAV (16-bit mono PCM sine tone) for the simulator and demo."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    peak = int(32767 * 0.3)
    samples = array("h", (int(peak * math.sin(2 * math.pi * tone_hz * i / rate))
                          for i in range(int(seconds * rate))))
    if sys.byteorder == "big":
        samples.byteswap()
    tmp = p.with_name(p.name + ".part")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    os.replace(tmp, p)
    return p
