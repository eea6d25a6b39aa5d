from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Recorded real-Asterisk traces and the bug-report cases, kept in the repository
#: (tests/data, copied from the shared folder with their READMEs); HOTLINE_SHARED
#: points the suite at another copy of the same layout.
SHARED = Path(os.environ.get("HOTLINE_SHARED") or ROOT / "tests" / "data")
TRACES = SHARED / "ami-traces"
CASES = SHARED / "ami-cases"


def trace_dirs() -> list[Path]:
    return sorted(p for p in TRACES.glob("*/") if (p / "trace.jsonl").exists())


def case_dirs() -> list[Path]:
    return sorted(p for p in CASES.glob("*/") if (p / "expected.json").exists())


# The database pass: unset, every test runs on SQLite files; HOTLINE_TEST_DATABASE set to a
# PostgreSQL server URL (e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/postgres, as
# ./run test sets it for its second pass) runs only the tests that take a database fixture,
# each on a new PostgreSQL database created for it (a copy of one migrated once per run, or
# an empty one for the migration tests) and dropped after (WITH FORCE, so a connection a
# test left open cannot keep it).  The others are reported as deselected.
TEST_DATABASE = os.environ.get("HOTLINE_TEST_DATABASE", "")
DATABASE_FIXTURES = {"tmp_db", "empty_db", "sync_db"}
_created = itertools.count(1)


def _admin(server_url: str, *sql: str) -> None:
    """Run statements on the PostgreSQL server's maintenance database, outside any
    transaction (CREATE/DROP DATABASE), on a short synchronous psycopg connection."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(server_url)
    with psycopg.connect(host=u.host or "127.0.0.1", port=u.port or 5432,
                         user=u.username or "postgres", password=u.password,
                         dbname=u.database or "postgres", autocommit=True) as conn:
        for statement in sql:
            conn.execute(statement)  # type: ignore[arg-type]


def pytest_report_header(config: pytest.Config) -> str:
    if TEST_DATABASE:
        from sqlalchemy.engine import make_url
        shown = make_url(TEST_DATABASE).render_as_string(hide_password=True)
        return f"database pass: PostgreSQL at {shown} (tests with a database fixture only)"
    return "database pass: SQLite (every test)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not TEST_DATABASE:
        return
    keep = [i for i in items if DATABASE_FIXTURES & set(getattr(i, "fixturenames", ()))]
    dropped = [i for i in items if i not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop any test database of this run a crashed fixture left behind."""
    if not TEST_DATABASE:
        return
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(TEST_DATABASE)
    with psycopg.connect(host=u.host or "127.0.0.1", port=u.port or 5432,
                         user=u.username or "postgres", password=u.password,
                         dbname=u.database or "postgres", autocommit=True) as conn:
        left = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname"
                                           " LIKE %s", (f"hotline_t{os.getpid()}\\_%",))]
    if left:
        _admin(TEST_DATABASE, *(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in left))


def _new_database(tmp_path: Path, template: str | None = None) -> Iterator[str]:
    """A new database's async URL: a SQLite file in ``tmp_path``, or (HOTLINE_TEST_DATABASE)
    a PostgreSQL database dropped after the test; a copy of ``template`` (a URL of the
    same kind) when given, else empty."""
    if not TEST_DATABASE:
        path = tmp_path / "hotline.db"
        if template is not None:
            import sqlite3

            from sqlalchemy.engine import make_url

            src, dst = sqlite3.connect(make_url(template).database), sqlite3.connect(path)
            try:
                src.backup(dst)
            finally:
                dst.close()
                src.close()
        yield f"sqlite+aiosqlite:///{path}"
        return
    from sqlalchemy.engine import make_url

    name = f"hotline_t{os.getpid()}_{next(_created)}"
    copy = f' TEMPLATE "{make_url(template).database}"' if template is not None else ""
    _admin(TEST_DATABASE, f'CREATE DATABASE "{name}"{copy}')
    try:
        yield (make_url(TEST_DATABASE).set(drivername="postgresql+asyncpg", database=name)
               .render_as_string(hide_password=False))
    finally:
        _admin(TEST_DATABASE, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One database of this run brought to the newest schema (Alembic head, as
    ``Store.open`` does), for :func:`tmp_db` to copy: migrating PostgreSQL takes seconds,
    copying it a fraction of one.  Nothing connects to it after it is made."""
    import asyncio

    from callcenter.db import Store

    made = _new_database(tmp_path_factory.mktemp("template"))
    url = next(made)

    async def migrate() -> None:
        store = Store(url)
        await store.open()
        await store.close()
    loop = asyncio.new_event_loop()  # not the tests' loop, and not made the current one
    try:
        loop.run_until_complete(migrate())
    finally:
        loop.close()
    yield url
    made.close()  # drops the PostgreSQL one


@pytest.fixture
def tmp_db(tmp_path: Path, migrated_template: str) -> Iterator[str]:
    """A new database at the newest schema and with no rows, as an empty one is after
    ``Store.open`` (which still runs Alembic's ``upgrade head``, here with nothing to do):
    a SQLite file, or (HOTLINE_TEST_DATABASE) a PostgreSQL database dropped after the
    test; a copy of :func:`migrated_template`.  A test of migrations wants ``sync_db``."""
    yield from _new_database(tmp_path, migrated_template)


@pytest.fixture
def empty_db(tmp_path: Path) -> Iterator[str]:
    """An empty database's async URL (no tables): like :func:`tmp_db`, not migrated."""
    yield from _new_database(tmp_path)


@pytest.fixture
def sync_db(empty_db: str) -> str:
    """An empty database's synchronous URL (Alembic's command line, inspect()): for the
    tests of migrations, which start from nothing."""
    from callcenter.db import sync_url
    return sync_url(empty_db)


@pytest.fixture
async def store(tmp_db: str) -> AsyncIterator[Any]:
    """A migrated database on a fresh ``tmp_db`` (callcenter.db.Store), closed after."""
    from callcenter.db import Store

    s = Store(tmp_db)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


CHROMIUM = Path("/usr/bin/chromium")  # Debian's; never a downloaded browser
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking"]
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium"),
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Headless Chromium driven by Playwright, closed after the test."""
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


def _console_problem(message: Any) -> str:
    """A console error as a test reports it: a resource that failed to load names its URL
    (Chromium's text does not, and a 404 once seen under load could not be traced)."""
    text = str(message.text)
    if text.startswith("Failed to load resource"):
        where = (message.location or {}).get("url", "")
        return f"{text} [{where}]" if where else text
    return text


async def sign_in(browser: Any, base_url: str, user: str, *, width: int = 1400,
                  height: int = 900, timezone_id: str | None = None) -> tuple[Any, list[str]]:
    """A page signed in as ``user`` (password ``demo``) at ``base_url`` (no trailing /),
    left where the login sent it; the list collects console and page errors (CSP too).
    ``timezone_id``: the browser's time zone (IANA name), the machine's when None."""
    context = await browser.new_context(viewport={"width": width, "height": height},
                                        locale="zh-CN", timezone_id=timezone_id)
    context.set_default_timeout(8000)
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(_console_problem(m)) if m.type == "error"
            else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    await page.goto(base_url + "/login")
    await page.fill("#username", user)
    await page.fill("#password", "demo")
    await page.press("#password", "Enter")
    return page, problems
