"""Values from the PBX (or a citizen's record) on their way back into AMI actions and AGI
commands: normalised or refused, never passed through.

A real Asterisk 22 dials whatever ``Originate Channel: Local/<number>@ctx`` names,
full-width digits included (AMI-NOTES); a comma in an ``Originate`` ``Variable:``
value starts a second variable (Asterisk splits the header on commas), and a
comma in an AGI ``EXEC`` argument starts a second application argument.  Every
function here raises :class:`BadValue` (a ``ValueError``) with a one-line reason.

* :func:`dial_number` -- a number to dial: full-width digits (a Chinese keyboard,
  U+FF10-U+FF19) and ``＋`` become ASCII by NFKC; any other non-ASCII digit
  (Arabic-Indic ``٣``, superscript ``²``, ...) or any other character is refused.
* :func:`uniqueid` -- an Asterisk ``Uniqueid`` / ``Linkedid`` (``[systemname-]epoch.seq``).
* :func:`variable_value` -- one ``NAME=value`` of an Originate's ``Variable`` or an AGI
  ``SET VARIABLE``: no CR, LF, NUL, comma, ``|``, ``"`` or ``\\``; at most 80 characters.
* :func:`app_word` -- a queue name, context or extension placed into an AMI field or an
  AGI ``EXEC`` argument: ``[A-Za-z0-9_.+-]``, 1-80 characters.
* :func:`channel` -- a channel or interface name for an AMI ``Channel``/``Interface``
  field or a ``ChanSpy`` argument (``PJSIP/1001``, ``Local/1001@agents/n``,
  ``Local/1001@agents-0000002a;1``): full-width forms become ASCII as in
  :func:`dial_number`, other non-ASCII digits are refused, and so is any comma (an
  application argument separator), ``|``, quote, space, CR or LF.

* :func:`ami_action` -- a whole AMI action: every channel field (``Channel``,
  ``Interface``, ...) through :func:`channel`, every name field (``Queue``, ``Context``,
  ``Exten``, ...) through :func:`app_word`.

Where they are applied (every value the service puts into an AMI action or an AGI
command): :func:`ami_action` on every action the console sends (``pbx()`` in
``agent_console/session.py``: ``QueueAdd``/``QueuePause``/``QueueRemove``/``Hangup``/
``Redirect``, and the supervisors' ``ChanSpy`` ``Originate`` and ``Hangup`` of
``agent_console/spy.py``), on the dialer's ``Originate`` (``ivr/dialer.py``, whose
numbers and variables also pass :func:`dial_number` and :func:`variable_value`) and on
``MixMonitor`` (``recordings/monitor.py``, whose file name is built from a checked
:func:`uniqueid`); the IVR's AGI commands use :func:`variable_value` and
:func:`app_word` (``ivr/fastagi.py``).
"""

from __future__ import annotations

import re
import unicodedata

MAX_NUMBER = 24


class BadValue(ValueError):
    """A value from outside that must not reach the PBX."""


def _fullwidth_to_ascii(text: str) -> str:
    # NFKC only for the full-width forms: NFKC would also turn a superscript "²" into "2",
    # and such digits are refused, not dialled.
    return "".join(unicodedata.normalize("NFKC", c) if "\uff01" <= c <= "\uff5e" else c
                   for c in text)


def dial_number(raw: object) -> str:
    """``+8613800138000`` from ``＋８６１３８…``; BadValue for anything else than digits."""
    if not isinstance(raw, str):
        raise BadValue("a number must be text")
    number = _fullwidth_to_ascii(raw.strip())
    body = number.removeprefix("+")
    if not body:
        raise BadValue("no number")
    for c in body:
        if c in "0123456789":
            continue
        if unicodedata.category(c) in ("Nd", "No", "Nl"):
            raise BadValue(f"non-ASCII digit U+{ord(c):04X} in a number")
        raise BadValue(f"character U+{ord(c):04X} in a number")
    if len(number) > MAX_NUMBER:
        raise BadValue(f"a number has at most {MAX_NUMBER} characters")
    return number


_UNIQUEID = re.compile(r"(?:[A-Za-z0-9_-]{1,32}-)?[0-9]{1,12}\.[0-9]{1,9}")


def uniqueid(raw: object) -> str:
    """An Asterisk uniqueid as sent in ``agi_uniqueid`` or an AMI event; BadValue otherwise."""
    if not isinstance(raw, str) or not _UNIQUEID.fullmatch(raw):
        raise BadValue("not an Asterisk uniqueid")
    return raw


_FORBIDDEN = set('\r\n\0,|"\\')


def variable_value(raw: object, *, max_len: int = 80) -> str:
    """A channel variable's value fit for ``Variable: NAME=value`` and ``SET VARIABLE``."""
    if not isinstance(raw, str):
        raise BadValue("a variable value must be text")
    bad = next((c for c in raw if c in _FORBIDDEN or unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise BadValue(f"character U+{ord(bad):04X} in a variable value")
    if len(raw) > max_len:
        raise BadValue(f"a variable value has at most {max_len} characters")
    return raw


_WORD = re.compile(r"[A-Za-z0-9_.+-]{1,80}")


def app_word(raw: object) -> str:
    """A queue, context or extension name for an AMI field or an AGI ``EXEC`` argument."""
    if not isinstance(raw, str) or not _WORD.fullmatch(raw):
        raise BadValue("not a plain name (letters, digits, _ . + -)")
    return raw


_CHANNEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:/+;-]{0,99}")


def channel(raw: object) -> str:
    """``PJSIP/1001`` from ``PJSIP/１００１``; BadValue for non-ASCII digits, separators,
    or anything else that is not a channel name (at most 100 characters)."""
    if not isinstance(raw, str):
        raise BadValue("a channel must be text")
    name = _fullwidth_to_ascii(raw)
    bad = next((c for c in name if not c.isascii()), None)
    if bad is not None:
        kind = "digit" if unicodedata.category(bad) in ("Nd", "No", "Nl") else "character"
        raise BadValue(f"non-ASCII {kind} U+{ord(bad):04X} in a channel name")
    if not _CHANNEL.fullmatch(name):
        raise BadValue("not a channel name (letters, digits and _ . @ : / + ; -)")
    return name


CHANNEL_FIELDS = ("Channel", "Interface", "ExtraChannel")
NAME_FIELDS = ("Queue", "Context", "Exten", "ExtraContext", "ExtraExten")


def ami_action(action: dict[str, str]) -> dict[str, str]:
    """A copy of ``action`` with its channel and name fields checked (full-width digits
    made ASCII); BadValue saying which field is not fit to send."""
    out = dict(action)
    for key in (*CHANNEL_FIELDS, *NAME_FIELDS):
        if key not in out:
            continue
        try:
            out[key] = channel(out[key]) if key in CHANNEL_FIELDS \
                else app_word(_fullwidth_to_ascii(out[key]))
        except BadValue as exc:
            raise BadValue(f"{key}: {exc}") from None
    return out
