"""The IVR as data and as a pure state machine: what to say, what to collect next.

Theory of operation
-------------------
A caller's path through the voice menus is an :class:`IvrSession`.  It is fed
what the caller did -- ``on_digits("2")`` or ``on_timeout()`` -- and returns
the commands the edge must carry out, in order: :class:`Play` a prompt,
:class:`Collect` keys (always the last command while the session waits),
:class:`SetVar` a channel variable, and one terminal command,
:class:`EnterQueue`, :class:`CallbackRequested` or :class:`Hangup`.  The
session never reads a clock or touches a socket; the FastAGI edge
(``ivr/fastagi.py``) turns commands into AGI lines and AGI results into
``on_digits``/``on_timeout``.

The default path follows GB/T 33358-2016: the number dialled (12345, 12315,
12369 ...) picks the category and the caller goes straight to the queue
without menus.  A language menu and deeper DTMF menus are opt-in per
configuration; every menu has a timeout, a retry count and an invalid-key
prompt, and a caller who exhausts the retries is queued with the hotline's
defaults rather than dropped.  When the expected wait of the chosen queue
reaches ``callback.offer_after_s`` the caller is offered a call-back that keeps
their place (:class:`CallbackRequested`, acted on by ``ivr/callbacks.py``).

:class:`Questionnaire` is the same idea for keyed answers (the after-call
survey, the return visit 回访): questions with allowed keys, retries on
timeouts and invalid keys, then either all answers or ``no_answer``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "ivr.toml"


# -- commands -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Play:
    """Play a prompt (a sound file name without extension)."""
    prompt: str


@dataclass(frozen=True)
class Collect:
    """Play ``prompt`` and collect up to ``max_digits`` keys, waiting ``timeout_ms``."""
    prompt: str
    timeout_ms: int
    max_digits: int = 1


@dataclass(frozen=True)
class SetVar:
    name: str
    value: str


@dataclass(frozen=True)
class EnterQueue:
    queue: str


@dataclass(frozen=True)
class CallbackRequested:
    """The caller asked to be called back; the service keeps their place in ``queue``."""
    queue: str
    hotline: str
    category: str
    lang: str
    ivr_path: str


@dataclass(frozen=True)
class Hangup:
    reason: str


Command = Play | Collect | SetVar | EnterQueue | CallbackRequested | Hangup


# -- the menu model -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Hotline:
    """One consolidated hotline number (12345 and the numbers merged into it)."""
    number: str
    name: str
    category: str
    queue: str
    menu: str | None = None  # opt-in DTMF menu; None = straight to the queue


@dataclass(frozen=True)
class Option:
    """A key in a menu: sets a category and/or queue, or opens a submenu."""
    key: str
    category: str | None = None
    queue: str | None = None
    submenu: str | None = None


@dataclass(frozen=True)
class Menu:
    name: str
    prompt: str
    options: Mapping[str, Option]
    timeout_s: float = 5.0
    retries: int = 2
    invalid_prompt: str = "hotline/invalid"
    timeout_prompt: str = "hotline/no-input"


@dataclass(frozen=True)
class Language:
    key: str
    code: str
    queue: str | None = None  # e.g. callers choosing English go to the English queue


@dataclass(frozen=True)
class LanguageMenu:
    enabled: bool
    prompt: str
    default: str
    options: Mapping[str, Language]
    timeout_s: float = 4.0
    retries: int = 1


@dataclass(frozen=True)
class CallbackOffer:
    enabled: bool
    offer_after_s: float
    prompt: str
    confirm_prompt: str
    key: str = "1"
    timeout_s: float = 5.0


@dataclass(frozen=True)
class IvrConfig:
    welcome: str | None
    default_hotline: str
    hotlines: Mapping[str, Hotline]
    menus: Mapping[str, Menu]
    language: LanguageMenu
    callback: CallbackOffer
    extras: Mapping[str, Any] = field(default_factory=dict)  # prompts for the other scripts
    categories: Mapping[str, str] = field(default_factory=dict)  # name -> title ([categories])

    def hotline_for(self, dialled: str) -> Hotline:
        """The hotline for a dialled number; unknown numbers get the default (12345)."""
        return self.hotlines.get(dialled.strip()) or self.hotlines[self.default_hotline]

    def prompt(self, name: str, default: str) -> str:
        return str(self.extras.get("prompts", {}).get(name, default))


class IvrConfigError(ValueError):
    pass


def parse_config(data: Mapping[str, Any]) -> IvrConfig:
    """Build an :class:`IvrConfig` from the TOML tables of ``config/ivr.toml``."""
    menus: dict[str, Menu] = {}
    for name, m in data.get("menus", {}).items():
        opts = {str(k): Option(str(k), o.get("category"), o.get("queue"), o.get("submenu"))
                for k, o in m.get("options", {}).items()}
        menus[name] = Menu(name, m["prompt"], opts, float(m.get("timeout_s", 5.0)),
                           int(m.get("retries", 2)), m.get("invalid_prompt", "hotline/invalid"),
                           m.get("timeout_prompt", "hotline/no-input"))
    hotlines = {str(n): Hotline(str(n), h.get("name", str(n)), h["category"], h["queue"],
                                h.get("menu"))
                for n, h in data.get("hotlines", {}).items()}
    lang = data.get("language", {})
    langs = {str(k): Language(str(k), v["code"], v.get("queue"))
             for k, v in lang.get("options", {}).items()}
    cb = data.get("callback", {})
    cfg = IvrConfig(
        welcome=data.get("welcome") or None,
        default_hotline=str(data.get("default_hotline", "12345")),
        hotlines=hotlines,
        menus=menus,
        language=LanguageMenu(bool(lang.get("enabled", False)), lang.get("prompt", "hotline/lang"),
                              lang.get("default", "zh"), langs, float(lang.get("timeout_s", 4.0)),
                              int(lang.get("retries", 1))),
        callback=CallbackOffer(bool(cb.get("enabled", False)), float(cb.get("offer_after_s", 120)),
                               cb.get("prompt", "hotline/callback-offer"),
                               cb.get("confirm_prompt", "hotline/callback-confirm"),
                               str(cb.get("key", "1")), float(cb.get("timeout_s", 5.0))),
        extras={k: v for k, v in data.items() if k in ("prompts", "selfservice", "survey",
                                                        "returnvisit")},
        categories={str(k): str(v) for k, v in data.get("categories", {}).items()},
    )
    _check(cfg)
    return cfg


def _check(cfg: IvrConfig) -> None:
    if cfg.default_hotline not in cfg.hotlines:
        raise IvrConfigError(f"default_hotline {cfg.default_hotline} is not a [hotlines] entry")
    used = {h.category for h in cfg.hotlines.values()} | {
        o.category for m in cfg.menus.values() for o in m.options.values() if o.category}
    if cfg.categories and not used <= set(cfg.categories):
        raise IvrConfigError(f"categories not in [categories]: {sorted(used - set(cfg.categories))}")
    for h in cfg.hotlines.values():
        if h.menu is not None and h.menu not in cfg.menus:
            raise IvrConfigError(f"hotline {h.number}: unknown menu {h.menu!r}")
    for m in cfg.menus.values():
        for o in m.options.values():
            if o.submenu is not None and o.submenu not in cfg.menus:
                raise IvrConfigError(f"menu {m.name} key {o.key}: unknown submenu {o.submenu!r}")
            if not (len(o.key) == 1 and o.key in "0123456789*#"):
                raise IvrConfigError(f"menu {m.name}: key {o.key!r} is not one DTMF key")


def category_labels(cfg: IvrConfig) -> dict[str, dict[str, str]]:
    """The configured categories as names per UI language: ``{code: {"zh": .., "en": ..}}``.

    ``[categories]`` in ``config/ivr.toml`` titles each code "<Chinese> <English>" ("咨询
    consultation"); the Chinese name is the part before the first space, the English the
    rest with its first letter raised.  A title without a space serves both languages.
    This is the one list the console's screen pop and history show (issue 13).
    """
    out: dict[str, dict[str, str]] = {}
    for code, title in cfg.categories.items():
        zh, _, en = title.strip().partition(" ")
        en = en.strip()
        out[code] = {"zh": zh or code, "en": (en[:1].upper() + en[1:]) if en else (zh or code)}
    return out


def load_config(path: str | Path | None = None) -> IvrConfig:
    with open(path or DEFAULT_CONFIG, "rb") as f:
        return parse_config(tomllib.load(f))


# -- the caller's path --------------------------------------------------------------------------

class IvrSession:
    """One caller's path from the welcome prompt to a queue (or a call-back request)."""

    def __init__(self, config: IvrConfig, dialled: str, *,
                 expected_wait: Mapping[str, float] | None = None,
                 category: str | None = None) -> None:
        """``dialled``: the hotline number (the dialplan's ``HOTLINE``), kept as it is even
        when ivr.toml does not list it (its menus and queue are then 12345's);
        ``category``: the dialplan's ``CATEGORY``, which wins over the hotline's."""
        self.config = config
        self.hotline = config.hotline_for(dialled)
        self.number = dialled.strip() or self.hotline.number
        self.category = category or self.hotline.category
        self.queue = self.hotline.queue
        self.lang = config.language.default
        self.keys: list[str] = []
        self.expected_wait = dict(expected_wait or {})
        self.done = False
        self._stage = "start"  # language | menu:<name> | callback | done
        self._tries = 0

    @property
    def ivr_path(self) -> str:
        """The keys pressed on the way, "direct" when the number alone chose the queue."""
        return "-".join(self.keys) or "direct"

    def start(self) -> list[Command]:
        out: list[Command] = [Play(self.config.welcome)] if self.config.welcome else []
        if self.config.language.enabled and self.config.language.options:
            return out + self._ask_language()
        return out + self._after_language()

    def on_digits(self, digits: str) -> list[Command]:
        """The caller pressed ``digits`` (an empty string is a timeout)."""
        if self.done:
            raise RuntimeError("the session is over")
        if not digits:
            return self.on_timeout()
        key = digits[0]
        if self._stage == "language":
            lang = self.config.language.options.get(key)
            if lang is None:
                return self._retry_language()
            self.keys.append(key)
            self.lang = lang.code
            if lang.queue:
                self.queue = lang.queue
            return self._after_language()
        if self._stage.startswith("menu:"):
            menu = self.config.menus[self._stage[5:]]
            opt = menu.options.get(key)
            if opt is None:
                return self._retry_menu(menu, "invalid")
            self.keys.append(key)
            self.category = opt.category or self.category
            self.queue = opt.queue or self.queue
            if opt.submenu:
                return self._ask_menu(self.config.menus[opt.submenu])
            return self._before_queue()
        if self._stage == "callback":
            if key == self.config.callback.key:
                self.keys.append(key)
                return self._callback()
            return self._finish()
        raise RuntimeError(f"no input expected in stage {self._stage}")

    def on_timeout(self) -> list[Command]:
        if self._stage == "language":
            return self._retry_language()
        if self._stage.startswith("menu:"):
            return self._retry_menu(self.config.menus[self._stage[5:]], "timeout")
        if self._stage == "callback":
            return self._finish()
        raise RuntimeError(f"no input expected in stage {self._stage}")

    # stages

    def _ask_language(self) -> list[Command]:
        self._stage, self._tries = "language", 0
        lm = self.config.language
        return [Collect(lm.prompt, int(lm.timeout_s * 1000))]

    def _retry_language(self) -> list[Command]:
        lm = self.config.language
        self._tries += 1
        if self._tries > lm.retries:
            return self._after_language()
        return [Collect(lm.prompt, int(lm.timeout_s * 1000))]

    def _after_language(self) -> list[Command]:
        if self.hotline.menu:
            return self._ask_menu(self.config.menus[self.hotline.menu])
        return self._before_queue()

    def _ask_menu(self, menu: Menu) -> list[Command]:
        self._stage, self._tries = f"menu:{menu.name}", 0
        return [Collect(menu.prompt, int(menu.timeout_s * 1000))]

    def _retry_menu(self, menu: Menu, why: str) -> list[Command]:
        self._tries += 1
        if self._tries > menu.retries:
            return self._before_queue()  # never drop a caller: queue with what we know
        notice = menu.invalid_prompt if why == "invalid" else menu.timeout_prompt
        return [Play(notice), Collect(menu.prompt, int(menu.timeout_s * 1000))]

    def _before_queue(self) -> list[Command]:
        cb = self.config.callback
        if cb.enabled and self.expected_wait.get(self.queue, 0.0) >= cb.offer_after_s:
            self._stage = "callback"
            return [Collect(cb.prompt, int(cb.timeout_s * 1000))]
        return self._finish()

    def _variables(self) -> list[Command]:
        return [SetVar("HOTLINE", self.number), SetVar("CATEGORY", self.category),
                SetVar("IVR_PATH", self.ivr_path), SetVar("LANG", self.lang)]

    def _finish(self) -> list[Command]:
        self._stage, self.done = "done", True
        return [*self._variables(), EnterQueue(self.queue)]

    def _callback(self) -> list[Command]:
        self._stage, self.done = "done", True
        return [*self._variables(),
                CallbackRequested(self.queue, self.number, self.category, self.lang,
                                  self.ivr_path),
                Play(self.config.callback.confirm_prompt), Hangup("callback_requested")]


# -- keyed answers: survey and return visit ------------------------------------------------------

@dataclass(frozen=True)
class Question:
    name: str
    prompt: str
    answers: Mapping[str, Any]  # key -> value recorded
    required: bool = True  # an unanswered required question ends with no_answer


@dataclass(frozen=True)
class Answered:
    answers: Mapping[str, Any]


@dataclass(frozen=True)
class NoAnswer:
    answers: Mapping[str, Any]  # what was answered before giving up


class Questionnaire:
    """Ask questions in order; each gets ``retries`` more tries after a timeout or bad key.

    ``start()``/``on_digits()``/``on_timeout()`` return a :class:`Collect` (with a
    :class:`Play` of the invalid prompt before it on a bad key), or the outcome:
    :class:`Answered` or :class:`NoAnswer`.
    """

    def __init__(self, questions: Sequence[Question], *, timeout_s: float = 6.0,
                 retries: int = 2, invalid_prompt: str = "hotline/invalid") -> None:
        if not questions:
            raise ValueError("a questionnaire needs questions")
        self.questions = list(questions)
        self.timeout_ms = int(timeout_s * 1000)
        self.retries = retries
        self.invalid_prompt = invalid_prompt
        self.answers: dict[str, Any] = {}
        self._i = 0
        self._tries = 0
        self.outcome: Answered | NoAnswer | None = None

    def start(self) -> list[Command | Answered | NoAnswer]:
        return [self._ask()]

    def _ask(self) -> Collect:
        return Collect(self.questions[self._i].prompt, self.timeout_ms)

    def on_digits(self, digits: str) -> list[Command | Answered | NoAnswer]:
        if self.outcome is not None:
            raise RuntimeError("the questionnaire is over")
        if not digits:
            return self.on_timeout()
        q = self.questions[self._i]
        if digits[0] not in q.answers:
            return self._retry(invalid=True)
        self.answers[q.name] = q.answers[digits[0]]
        return self._next()

    def on_timeout(self) -> list[Command | Answered | NoAnswer]:
        if self.outcome is not None:
            raise RuntimeError("the questionnaire is over")
        return self._retry(invalid=False)

    def hung_up(self) -> NoAnswer | Answered:
        """The line dropped: whatever was answered, and whether that suffices."""
        if self.outcome is None:
            self.outcome = self._settle()
        return self.outcome

    def _settle(self) -> Answered | NoAnswer:
        missing = [q for q in self.questions if q.required and q.name not in self.answers]
        return NoAnswer(dict(self.answers)) if missing else Answered(dict(self.answers))

    def _retry(self, invalid: bool) -> list[Command | Answered | NoAnswer]:
        self._tries += 1
        if self._tries > self.retries:
            if self.questions[self._i].required:
                self.outcome = NoAnswer(dict(self.answers))
                return [self.outcome]
            return self._next()
        return [Play(self.invalid_prompt), self._ask()] if invalid else [self._ask()]

    def _next(self) -> list[Command | Answered | NoAnswer]:
        self._i += 1
        self._tries = 0
        if self._i >= len(self.questions):
            self.outcome = self._settle()
            return [self.outcome]
        return [self._ask()]


SATISFACTION = {"1": 1, "2": 2, "3": 3}
"""Key = score as in callcenter.orders.lifecycle: 3 满意 satisfied, 2 基本满意, 1 不满意 dissatisfied."""


def survey(prompt: str = "hotline/survey") -> Questionnaire:
    """The after-call satisfaction survey: one key, 1-3."""
    return Questionnaire([Question("satisfaction", prompt, SATISFACTION)])


def return_visit(prompts: Mapping[str, str] | None = None, *,
                 department: bool = True) -> Questionnaire:
    """The return visit 回访 for a completed order: solved? then satisfaction twice.

    Only "solved" is required: a citizen who answers it and hangs up has still
    answered; the satisfaction scores are then left empty.  ``department=False``
    (an order no department handled, e.g. resolved on the call) leaves out the
    question about the department.
    """
    p = {"resolved": "hotline/rv-resolved", "operator": "hotline/rv-sat-operator",
         "department": "hotline/rv-sat-department", **(prompts or {})}
    questions = [
        Question("resolved", p["resolved"], {"1": True, "2": False}),
        Question("sat_operator", p["operator"], SATISFACTION, required=False),
    ]
    if department:
        questions.append(Question("sat_department", p["department"], SATISFACTION,
                                  required=False))
    return Questionnaire(questions)
