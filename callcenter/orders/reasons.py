"""The reasons the system itself writes on an order's trail, as codes with parameters.

A person's reason (a department's 退单理由, a supervisor's 督办 note) is stored as it
was typed.  A reason the code writes — a merged order following its lead, the dialler's
automatic return-visit call, a return-visit call nobody answered — is a
:class:`SystemReason`: a code from :data:`REASONS` and its parameters, created where the
step is taken (``callcenter/orders/merge.py``, ``ivr/dialer.py``).  The audit record
keeps it as ``data["reason_code"]`` (``{"code": "visit_unreachable", "attempt": 3,
"outcome": "no_answer"}``) beside a Chinese rendering in ``reason`` for readers that
do not know codes; the API renders it in Chinese and English from the one table below
(:func:`render`), so the browser never parses sentences.

Rows written before codes existed hold the reason as free English or Chinese text; the
trail is never rewritten (audit records are append-only), so they are read through
:func:`from_legacy` (:func:`rendered` does it): the three sentences the code used to write
become their codes, any other text is a person's and stays as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: code -> (parameters, Chinese, English).  Parameters are filled with str.format; an
#: ``outcome`` parameter is itself a code of :data:`OUTCOMES`.
REASONS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "merge_follow": (("lead",), "并案：随主件 {lead} 办理",
                     "Merged: handled with lead order {lead}"),
    "visit_auto": ((), "自动回访外呼", "Automatic return-visit call"),
    "visit_unreachable": (("attempt", "outcome"), "第 {attempt} 次回访外呼未接通：{outcome}",
                          "Return-visit call {attempt} not reached: {outcome}"),
}

#: How a return-visit call ended (Asterisk's OriginateResponse ``Reason`` as
#: ``ivr.dialer.OUTCOME_CODES``; the IVR's own: picked up, no key) -> (Chinese, English).
OUTCOMES: dict[str, tuple[str, str]] = {
    "failed": ("呼叫失败", "call failed"),
    "hung_up": ("对方挂断", "hung up"),
    "no_answer": ("无人接听", "no answer"),
    "answered": ("已接听", "answered"),
    "busy": ("占线", "busy"),
    "congestion": ("线路拥塞", "congestion"),
    "no_keys": ("接通但未按键", "no keys pressed"),
    "no_result": ("语音导航未回报结果", "no result from the IVR"),
    "other": ("其他原因", "other reason"),
}

LANGS = ("zh", "en")


@dataclass(frozen=True, slots=True)
class SystemReason:
    """A reason the system writes: ``code`` from :data:`REASONS`, ``params`` its values
    (str or int), ``detail`` optional text from outside (the PBX's own message) shown
    after it as it is.  Raises ValueError for an unknown code or wrong parameters."""

    code: str
    params: Mapping[str, str | int] = field(default_factory=dict)
    detail: str = ""

    def __post_init__(self) -> None:
        spec = REASONS.get(self.code)
        if spec is None:
            raise ValueError(f"unknown system reason {self.code!r}")
        if set(self.params) != set(spec[0]):
            raise ValueError(f"system reason {self.code!r} takes {', '.join(spec[0]) or 'no'}"
                             f" parameters, not {', '.join(sorted(self.params)) or 'none'}")
        outcome = self.params.get("outcome")
        if outcome is not None and outcome not in OUTCOMES:
            raise ValueError(f"unknown call outcome {outcome!r}")

    def as_dict(self) -> dict[str, Any]:
        """The stored form: ``{"code": ..., **params}`` (and ``"detail"`` when given)."""
        return {"code": self.code, **self.params} | ({"detail": self.detail}
                                                     if self.detail else {})


def parse(stored: Any) -> SystemReason | None:
    """The :class:`SystemReason` of a stored ``data["reason_code"]``, or None when it is
    missing or not a known code with its parameters (never raises)."""
    if not isinstance(stored, Mapping) or not isinstance(stored.get("code"), str):
        return None
    spec = REASONS.get(stored["code"])
    if spec is None:
        return None
    params = {k: stored[k] for k in spec[0] if isinstance(stored.get(k), (str, int))}
    detail = stored.get("detail")
    try:
        return SystemReason(stored["code"], params, detail if isinstance(detail, str) else "")
    except ValueError:
        return None


def render(reason: SystemReason, lang: str = "zh") -> str:
    """The reason as a sentence in ``lang`` (``zh`` or ``en``; anything else is ``zh``)."""
    i = 1 if lang == "en" else 0
    params = {k: (OUTCOMES[str(v)][i] if k == "outcome" else v)
              for k, v in reason.params.items()}
    text = REASONS[reason.code][1 + i].format(**params)
    if not reason.detail:
        return text
    return f"{text}（{reason.detail}）" if i == 0 else f"{text} ({reason.detail})"


def rendered(data: Mapping[str, Any], text: str | None = None) -> dict[str, str] | None:
    """``{"zh": ..., "en": ...}`` for an audit record whose data hold a reason code, or
    whose reason ``text`` is one the system wrote before codes (:func:`from_legacy`);
    None for a person's reason or none."""
    reason = parse(data.get("reason_code")) or from_legacy(text)
    return None if reason is None else {lang: render(reason, lang) for lang in LANGS}


# ------------------------------------------------------------------- rows before codes

#: The dialler's English outcome words before codes (ivr/dialer.py REASONS).
_OLD_OUTCOMES = {"failed": "failed", "hung up": "hung_up", "no answer": "no_answer",
                 "answered": "answered", "busy": "busy", "congestion": "congestion",
                 "no keys pressed": "no_keys", "no result from the IVR": "no_result"}

_LEGACY: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^并案：随主件 (?P<lead>\S+) 办理$"), "merge_follow"),
    (re.compile(r"^automatic return-visit call$"), "visit_auto"),
    (re.compile(r"^return-visit call (?P<attempt>\d{1,3}): (?P<why>.*)$", re.DOTALL),
     "visit_unreachable"),
)


def from_legacy(text: str | None) -> SystemReason | None:
    """A reason stored as text before codes existed (``"return-visit call 2: busy"``,
    ``"并案：随主件 202611300001 办理"``), as its code; None for any other text (a
    person's reason stays as typed)."""
    if not text:
        return None
    for pattern, code in _LEGACY:
        m = pattern.match(text)
        if m is None:
            continue
        if code != "visit_unreachable":
            return SystemReason(code, m.groupdict())
        why = m["why"]
        word, _, detail = why.partition(": ")
        outcome = _OLD_OUTCOMES.get(word)
        if outcome is None:
            outcome, detail = "other", why
        return SystemReason(code, {"attempt": int(m["attempt"]), "outcome": outcome},
                            detail.strip())
    return None
