"""``callcenter recordings retention``: a dry run by default, --apply removes, open orders hold."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import insert

from callcenter.cli import build_parser
from callcenter.db import Store
from callcenter.orders.store import OrderRow
from recordings.store import write_wav

OLD, HELD, NEW = "1577836800.1", "1577836800.2", "1795434000.3"


def main(argv: list[str]) -> int:
    """The command without ``callcenter.cli.main``'s logging set-up (capsys would own it)."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


async def _order_for(db: str, uniqueid: str) -> None:
    store = Store(db)
    try:
        await store.open()
        async with store.engine.begin() as conn:
            await conn.execute(insert(OrderRow.__table__).values(
                number="20200101-000001", caller="", call_uniqueid=uniqueid,
                created_by="op1", created_at=1577836900.0, status="processing"))
    finally:
        await store.close()


def test_retention_reports_then_applies_and_keeps_open_orders(
        tmp_path: Path, tmp_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "rec"
    db = tmp_db
    for uid, day in ((OLD, "2020-01-01"), (HELD, "2020-01-01"), (NEW, "2026-11-23")):
        write_wav(root / day / f"{uid}.wav", 1)
    asyncio.run(_order_for(db, HELD))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[recordings]\nroot = "{root}"\nretention_days = 180\n'
                   f'[database]\nurl = "{db}"\n')
    assert main(["--config", str(cfg), "recordings", "retention"]) == 0
    out = capsys.readouterr().out
    assert f"would remove: 2020-01-01/{OLD}.wav" in out and "dry run" in out
    assert f"kept for open order(s) 1: 2020-01-01/{HELD}.wav" in out
    assert (root / "2020-01-01" / f"{OLD}.wav").exists()
    assert main(["--config", str(cfg), "recordings", "retention", "--apply"]) == 0
    assert "removed 1 recordings" in capsys.readouterr().out
    assert not (root / "2020-01-01" / f"{OLD}.wav").exists()
    assert (root / "2020-01-01" / f"{HELD}.wav").exists()
    assert (root / "2026-11-23" / f"{NEW}.wav").exists()
