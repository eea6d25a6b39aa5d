"""``callcenter knowledge`` (import articles, statistics) and ``callcenter intake-keys``
(API keys of the channels that file orders through ``POST /api/intake/orders``)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from callcenter.config import Settings
from callcenter.db import Store
from callcenter.runtime import CliError


def add_knowledge_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="knowledge_cmd", required=True)
    imp = sub.add_parser("import", help="import articles from .csv or .md files")
    imp.add_argument("files", nargs="+", type=Path, metavar="FILE")
    imp.add_argument("--by", default="import", help="who is recorded as the author")
    sub.add_parser("stats", help="articles answering most orders, searches finding nothing")


def knowledge_main(args: argparse.Namespace, settings: Settings) -> int:
    from callcenter.orders.knowledge import ArticleError, KnowledgeBase, parse_file

    items: list[dict[str, str]] = []
    if args.knowledge_cmd == "import":
        for path in args.files:
            if not path.is_file():
                raise CliError(f"{path}: no such file")
            try:
                found = parse_file(path)
            except (ArticleError, UnicodeDecodeError) as exc:
                raise CliError(f"{path}: {exc}") from None
            if not found:
                raise CliError(f"{path}: no article found (Markdown: '# title' lines)")
            items.extend(found)

    async def run() -> Any:
        store = Store(settings.database_url)
        try:
            await store.open()
            kb = KnowledgeBase(store.engine, settings.tz)
            if args.knowledge_cmd == "import":
                return await kb.create_many(items, args.by)
            return await kb.stats()
        finally:
            await store.close()

    try:
        result = asyncio.run(run())
    except ArticleError as exc:
        raise CliError(f"nothing imported: {exc}") from None
    if args.knowledge_cmd == "import":
        print(f"imported {result} article(s) into {settings.database_url.split('///')[-1]}")
    else:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0
