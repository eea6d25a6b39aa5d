from __future__ import annotations

import itertools
import os
import sys
import threading
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


#: Seconds a test may take, fixtures' set-up and teardown included, before every running
#: event loop's tasks are printed (pytest-timeout stops it at 300 s, with the threads'
#: stacks only: an idle loop's stack says nothing of what the tasks wait for).
STUCK_DUMP_S = float(os.environ.get("HOTLINE_TEST_STUCK_S", "240"))


def await_chain(coro: Any) -> list[str]:
    """Where a coroutine stands: each frame of its chain of awaits, outermost first,
    then what the innermost waits on."""
    out: list[str] = []
    for _ in range(64):
        frame = (getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
                 or getattr(coro, "ag_frame", None))
        if frame is not None:
            out.append(f"    {frame.f_code.co_filename}:{frame.f_lineno} "
                       f"in {frame.f_code.co_name}")
        inner = (getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
                 or getattr(coro, "ag_await", None))
        if inner is None:
            break
        if not any(hasattr(inner, a) for a in ("cr_frame", "gi_frame", "ag_frame")):
            out.append(f"    awaits {inner!r:.300}")
            break
        coro = inner
    return out


def dump_loops(title: str, file: Any = None, wait_s: float = 5.0) -> int:
    """Print every running event loop's tasks with their await chains (on the loop's
    own thread, so an idle loop answers), and the threads' stacks if a loop does not
    answer in ``wait_s``; returns how many loops were found.  For a test that stands
    still: which await never ends."""
    import asyncio
    import gc
    import traceback

    out = file or sys.stderr
    loops = [o for o in gc.get_objects()
             if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()]
    print(f"\n===== {title}: {len(loops)} running event loop(s) =====", file=out)

    def tasks_of(loop: asyncio.AbstractEventLoop, answered: threading.Event) -> None:
        try:
            for task in sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name()):
                waiter = getattr(task, "_fut_waiter", None)
                print(f"  task {task.get_name()} waits on {waiter!r:.300}", file=out)
                print("\n".join(await_chain(task.get_coro())), file=out)
        finally:
            answered.set()

    silent = False
    for loop in loops:
        answered = threading.Event()
        print(f"--- loop {loop!r:.120}", file=out)
        try:
            loop.call_soon_threadsafe(tasks_of, loop, answered)
        except RuntimeError:
            continue
        if not answered.wait(wait_s):
            print("  (busy: it did not answer)", file=out)
            silent = True
    if silent or not loops:
        names = {t.ident: t.name for t in threading.enumerate()}
        for ident, frame in sys._current_frames().items():
            print(f"--- thread {names.get(ident, ident)}", file=out)
            print("".join(traceback.format_stack(frame)), file=out)
    out.flush()
    return len(loops)


@pytest.fixture(autouse=True)
def _stuck_test_dump(request: pytest.FixtureRequest) -> Iterator[None]:
    """After :data:`STUCK_DUMP_S`, :func:`dump_loops` (into the test's captured output,
    shown with its timeout failure)."""
    timer = threading.Timer(STUCK_DUMP_S, dump_loops,
                            (f"{request.node.nodeid} still running after {STUCK_DUMP_S:g} s",))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


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
