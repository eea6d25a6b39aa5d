"""The shipped dialplan against Asterisk's pattern rules.

A small matcher written from Asterisk's documented pattern syntax (``README`` of
extensions.conf / the wiki's "Pattern Matching"): a ``_`` prefix makes a pattern;
``X`` is 0-9, ``Z`` 1-9, ``N`` 2-9 (letters matched whatever their case);
``[...]`` a set with ``a-z`` ranges; ``.`` one or more characters, ``!`` zero or
more, and what follows them is not looked at; ``-`` outside a set is decoration;
every other character is itself.  It is
independent of the simulator's (``callcenter/pbx/sim/admin.py``), which follows
pbx.c; the two must agree.

Every extension the service or the console sends a channel to must exist here:
a real Asterisk 22 took ``Redirect`` to ``hotline@transfer`` ("Redirect
successful"), then dropped the caller ("sent to invalid extension but no invalid
handler: context,exten,priority=transfer,hotline,1") because ``_hotline.`` has an
``n``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_console.session import transfer_departments
from callcenter.pbx.sim.admin import Dialplan, extension_match

ROOT = Path(__file__).resolve().parent.parent
ASTERISK = ROOT / "config" / "asterisk"
DIALPLAN = Dialplan.load(ASTERISK / "extensions.conf")


def documented_match(pattern: str, exten: str) -> bool:
    if not pattern.startswith("_"):
        return pattern.replace("-", "") == exten.replace("-", "")
    rx, i, p = "", 0, pattern[1:]
    while i < len(p):
        c = p[i]
        if c == "[":
            end = p.index("]", i)
            rx += "[" + re.sub(r"([\\\]^])", r"\\\1", p[i + 1:end]) + "]" if end > i + 1 else ""
            i = end
        elif c.upper() in "XZN":
            rx += {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]"}[c.upper()]
        elif c in ".!":  # what follows a "." or "!" is never looked at (pbx.c returns at once)
            rx += ".+" if c == "." else ".*"
            break
        elif c != "-":
            rx += re.escape(c)
        i += 1
    return re.fullmatch(rx, exten.replace("-", ""), re.DOTALL) is not None


def exists(context: str, exten: str) -> bool:
    return any(documented_match(e, exten) for e, _ in DIALPLAN.contexts.get(context, []))


def settings() -> dict:
    with open(ROOT / "config" / "callcenter.toml", "rb") as f:
        return tomllib.load(f)


def ivr() -> dict:
    with open(ROOT / "config" / "ivr.toml", "rb") as f:
        return tomllib.load(f)


@pytest.mark.parametrize(("pattern", "exten", "match"), [
    ("_hotline.", "hotline", False),      # n = 2-9: the recorded failure
    ("_hotline.", "hotline-en", False),
    ("_[a-z].", "hotline", True),
    ("_[a-z].", "hotline-en", True),       # "-" is decoration
    ("_8XXX", "8101", True), ("_8XXX", "81012", False), ("_8XXX", "810", False),
    ("_X.", "13800138000", True), ("_X.", "1", False), ("_X!", "1", True),
    ("_NXX", "299", True), ("_nxx", "299", True), ("_NXX", "199", False),
    ("_Z", "0", False), ("_123XX", "12345", True), ("_[13-5]", "4", True),
    ("_[13-5]", "2", False), ("s", "s", True), ("12345", "123-45", True),
    ("_X.", "１３８", False),  # full-width digits are not 0-9
])
def test_documented_rules(pattern: str, exten: str, match: bool) -> None:
    assert documented_match(pattern, exten) is match
    assert extension_match(pattern, exten) is match


TOKENS = ["X", "Z", "N", "x", "n", "z", "0", "1", "5", "9", "a", "-", ".", "!", "[0-5]",
          "[ab]", "[3-7a]", "[a-z]"]


@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=6),
       st.text(alphabet="0123456789ab-", max_size=8))
def test_the_simulators_matcher_agrees(tokens: list[str], exten: str) -> None:
    pattern = "_" + "".join(tokens)
    assert extension_match(pattern, exten) is documented_match(pattern, exten)


def test_every_transfer_target_exists() -> None:
    queues = list(settings()["queues"])
    lines = [d["number"] for d in transfer_departments()]
    assert queues and len(lines) >= 12
    missing = [t for t in queues + lines if not exists("transfer", t)]
    assert missing == []


def test_transfer_targets_are_the_work_order_departments() -> None:
    with open(ROOT / "config" / "departments.toml", "rb") as f:
        ids = [d["id"] for d in tomllib.load(f)["department"]]
    assert [d["id"] for d in transfer_departments()] == ids
    assert len({d["number"] for d in transfer_departments()}) == len(ids)


@pytest.mark.parametrize(("context", "exten"), [
    *[("hotline-queue", q) for q in ("hotline", "hotline-en")],    # call-backs' Originate
    ("hotline-outbound", "13800138000"), ("hotline-outbound", "02512345678"),  # return visits
    ("hotline-callback", "13800138000"), ("hotline-callback", "+8613800138000"),
    ("inbound-ivr", "s"), ("inbound", "s"),                        # the IVR and its fallback
    *[("agents", str(n)) for n in (1001, 1008, 1901, 1904)],       # phones, ChanSpy
])
def test_every_extension_the_service_sends_a_channel_to_exists(context: str, exten: str) -> None:
    assert exists(context, exten), f"{exten}@{context}"


def test_every_hotline_number_reaches_the_ivr_with_the_ivrs_category() -> None:
    cfg = ivr()
    categories = set(cfg["categories"])
    set_by_dialplan = {}
    for exten, apps in DIALPLAN.contexts["from-trunk"]:
        m = re.search(r"Set\(__CATEGORY=(\w+)\)", apps[0])
        assert m, f"{exten} sets no CATEGORY"
        set_by_dialplan[exten] = m[1]
    assert set(set_by_dialplan.values()) <= categories
    for number, hotline in cfg["hotlines"].items():
        assert set_by_dialplan[number] == hotline["category"], number
        assert exists("hotline-answer", number)
    assert exists("from-trunk", "12399") and exists("hotline-answer", "12399")


def test_the_inbound_ivr_gets_the_token_and_the_channel_variables() -> None:
    [(_exten, apps)] = DIALPLAN.contexts["inbound-ivr"]
    text = "\n".join(apps)
    assert "Set(AGI_TOKEN=${SHA1(${HOTLINE_AGI_SECRET}${UNIQUEID})})" in text
    assert text.index("AGI_TOKEN") < text.index("AGI(${HOTLINE_AGI})")


def test_callers_wait_with_music() -> None:
    queues = (ASTERISK / "queues.conf").read_text(encoding="utf-8")
    moh = (ASTERISK / "musiconhold.conf").read_text(encoding="utf-8")
    [cls] = re.findall(r"^musicclass\s*=\s*(\S+)", queues, re.MULTILINE)
    assert f"[{cls}]" in moh and re.search(r"^mode\s*=\s*files", moh, re.MULTILINE)
