from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("HOTLINE_SHARED", ROOT.parent / "shared"))
TRACES = SHARED / "ami-traces"


def trace_dirs() -> list[Path]:
    return sorted(p for p in TRACES.glob("*/") if (p / "trace.jsonl").exists())


@pytest.fixture
def tmp_db(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'hotline.db'}"
