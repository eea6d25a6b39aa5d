"""``callcenter recordings retention [--apply]``: the retention report, or the removal.

By default only reports (a dry run).  Recordings of calls whose work order is not
yet finished (state other than ``evaluated``) are kept whatever their age.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from callcenter.config import Settings
from recordings.store import RecordingStore, RetentionReport

FINISHED = ("evaluated",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="recordings_command", required=True)
    r = sub.add_parser("retention", help="report (default) or remove recordings past retention")
    r.add_argument("--apply", action="store_true", help="remove them (default: only report)")
    r.add_argument("--days", type=int, default=None,
                   help="retention in days (default [recordings] retention_days)")


async def _open_order_calls(settings: Settings) -> dict[str, str]:
    """uniqueid -> order id for work orders not finished yet (their recordings are held)."""
    from sqlalchemy import select

    from callcenter.db import Store
    from callcenter.orders.store import OrderRow

    store = Store(settings.database_url)
    try:
        await store.open()
        async with store.sessions() as s:
            rows = await s.execute(select(OrderRow.call_uniqueid, OrderRow.id).where(
                OrderRow.call_uniqueid.is_not(None), OrderRow.status.not_in(FINISHED)))
            return {str(u): str(i) for u, i in rows if u}
    finally:
        await store.close()


def retention(settings: Settings, *, apply: bool, days: int | None = None,
              now: float | None = None) -> tuple[int, RetentionReport]:
    store = RecordingStore(settings.recordings_root)
    found = store.scan()
    held = asyncio.run(_open_order_calls(settings))
    for uniqueid, order_id in held.items():
        store.link_order(uniqueid, order_id)
    report = store.apply_retention(time.time() if now is None else now,
                                   days or settings.recordings_retention_days,
                                   dry_run=not apply, hold=set(held.values()))
    return found, report


def main_from_args(args: argparse.Namespace, settings: Settings) -> int:
    days = args.days or settings.recordings_retention_days
    if days < 1:
        from callcenter.runtime import CliError

        raise CliError("--days must be at least 1")
    found, report = retention(settings, apply=args.apply, days=days)
    verb = "would remove" if report.dry_run else "removed"
    print(f"{found} recordings under {settings.recordings_root}; retention {days} days "
          f"(before {time.strftime('%Y-%m-%d %H:%M', time.localtime(report.cutoff))})")
    for rec in report.removed:
        print(f"  {verb}: {rec.path}  {rec.size} bytes")
    for rec in report.kept_for_orders:
        print(f"  kept for open order(s) {', '.join(sorted(rec.order_ids))}: {rec.path}")
    print(f"{verb} {len(report.removed)} recordings, {report.bytes} bytes; "
          f"{len(report.kept_for_orders)} kept for open work orders")
    if report.dry_run and report.removed:
        print("dry run: nothing was removed; add --apply to remove them")
    return 0
