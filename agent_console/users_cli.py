"""``callcenter users add|passwd|disable|enable|set|list``: accounts from the command line.

Passwords are read from a terminal prompt (twice), or as one line from standard
input with ``--password-stdin``; never from the command line, where ``ps`` and
the shell history would keep them.  Changing a password or disabling an account
ends its open sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from agent_console.auth import User, UserError, Users
from agent_console.models import Role
from callcenter.config import ConfigError, load
from callcenter.db import Store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``users`` sub-commands, added to ``parser``."""
    sub = parser.add_subparsers(dest="users_command", required=True)

    add = sub.add_parser("add", help="create an account")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    add.add_argument("--display-name", default="")
    _mapping_arguments(add)
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password as one line from standard input")

    pw = sub.add_parser("passwd", help="set a new password (ends the account's sessions)")
    pw.add_argument("username")
    pw.add_argument("--password-stdin", action="store_true")

    dis = sub.add_parser("disable", help="disable an account (ends its sessions)")
    dis.add_argument("username")
    en = sub.add_parser("enable", help="enable a disabled account")
    en.add_argument("username")

    st = sub.add_parser("set", help="change an account's queue member mapping or role")
    st.add_argument("username")
    st.add_argument("--role", choices=[r.value for r in Role])
    _mapping_arguments(st)

    sub.add_parser("list", help="list the accounts")


def _mapping_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--member", dest="member_name",
                   help="queue member name (operator opN defaults to agent(1000+N))")
    p.add_argument("--interface",
                   help="queue member interface (opN defaults to Local/(1000+N)@agents/n)")
    p.add_argument("--queues", help="comma-separated queues to sign in to (default: all)")


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise UserError("no password on standard input")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UserError("no terminal to ask for the password: use --password-stdin")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise UserError("the passwords differ")
    return first


def _queues(raw: str | None) -> list[str] | None:
    return None if raw is None else [q.strip() for q in raw.split(",") if q.strip()]


def _line(u: User) -> str:
    state = "disabled" if u.disabled else "enabled"
    member = f"  member {u.member_name} {u.interface}" if u.interface else ""
    queues = f"  queues {','.join(u.queues)}" if u.queues else ""
    return f"{u.username:<16} {u.role.value:<10} {state:<8}{member}{queues}"


async def _run(args: argparse.Namespace) -> str:
    settings = load(getattr(args, "config", None))
    store = Store(settings.database_url)
    try:
        await store.open()
        users = Users(store.engine)
        cmd = args.users_command
        if cmd == "list":
            return "\n".join(_line(u) for u in await users.all()) or "no accounts"
        if cmd == "add":
            user = await users.add(args.username, _password(args), args.role,
                                   display_name=args.display_name,
                                   member_name=args.member_name, interface=args.interface,
                                   queues=_queues(args.queues))
            return f"added {_line(user)}"
        if cmd == "passwd":
            user = await users.change(args.username, password=_password(args))
            return f"password changed: {_line(user)}"
        if cmd in ("disable", "enable"):
            user = await users.change(args.username, disabled=cmd == "disable")
            return f"{cmd}d: {_line(user)}"
        user = await users.change(args.username, member_name=args.member_name,
                                  interface=args.interface, queues=_queues(args.queues),
                                  role=args.role)
        return f"changed: {_line(user)}"
    finally:
        await store.close()


def main_from_args(args: argparse.Namespace) -> int:
    """Run one ``users`` sub-command; 0 on success, 2 with a one-line message otherwise."""
    try:
        print(asyncio.run(_run(args)))
    except (UserError, ConfigError) as exc:
        print(f"callcenter users: {exc}", file=sys.stderr)
        return 2
    return 0
