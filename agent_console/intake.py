"""Structured intake (受理) on the operator console: the form's lists and its rules.

The lists come from ``config/intake.toml`` (诉求类型, 回复方式, the category tree
事项分类 with the departments that usually handle each leaf, the districts and
streets of 事发地址).  A draft keeps its structured fields as one JSON object
(:data:`DRAFT_KEYS`); :func:`clean_fields` checks what a browser sends on every
save (types, lengths, codes, a call-back number's characters; half-typed is fine),
:func:`problems_for_submit` what must be there before a draft becomes an order (a
call-back number one can dial among them), and :func:`order_parts` turns the
fields into the order's caller, category, location and :class:`Intake`.
Pure: no IO besides :meth:`IntakeConfig.load` reading the file.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callcenter.orders.lifecycle import Caller, Directory, Intake, Urgency

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"

GENDERS = ("", "female", "male")
#: key -> (kind, max length): "text", "code" (checked against a list), "bool".
DRAFT_KEYS: dict[str, tuple[str, int]] = {
    "caller_name": ("text", 60),
    "gender": ("code", 8),
    "callback": ("text", 40),
    "request_type": ("code", 16),
    "category": ("text", 120),
    "district": ("text", 40),
    "street": ("text", 40),
    "address": ("text", 200),
    "urgency": ("code", 16),
    "confidential": ("bool", 0),
    "reply_method": ("code", 16),
}


#: What a 回复号码 may hold while it is typed: digits, a leading +, separators, and 转
#: before an extension (010-12345678转123).
CALLBACK_CHARS = re.compile(r"\+?[0-9()\- ]*(?:转[0-9 ]*)?")


def plain_number(text: str) -> str:
    """A number as a Chinese input method may type it, made plain: full-width digits and
    signs (NFKC), and the dashes ‐ ‒ – — ― − as "-"."""
    return unicodedata.normalize("NFKC", text).translate(DASHES)


DASHES = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-",
                        "\u2014": "-", "\u2015": "-", "\u2212": "-"})


def callback_complete(number: str) -> bool:
    """A 回复号码 one can dial: :data:`CALLBACK_CHARS`, and 5 to 20 digits before any
    extension (a mobile has 11, a landline with its area code 10-12, a short service
    number 5)."""
    if not CALLBACK_CHARS.fullmatch(number):
        return False
    digits = sum(ch.isdigit() for ch in number.split("转", 1)[0])
    return 5 <= digits <= 20


class IntakeError(ValueError):
    """A field value the form cannot take (400); ``zh`` says it in Chinese, ``code`` (when
    set) names it for the pages' dictionary (``apierr.<code>`` in static/i18n.js)."""

    def __init__(self, message: str, zh: str = "", code: str = "") -> None:
        super().__init__(message)
        self.zh, self.code = zh, code


@dataclass(frozen=True, slots=True)
class CategoryNode:
    """One node of the category tree: its path from the top and the usual departments."""

    name: str
    name_en: str
    path: tuple[str, ...]
    departments: tuple[str, ...]
    children: tuple[CategoryNode, ...] = ()

    path_en: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """What the order records: the path below the top-level group, ``市政设施/路灯``."""
        return "/".join(self.path[1:]) or self.name

    @property
    def label_en(self) -> str:
        """The label in the English UI: ``Municipal facilities/Street lights`` (each level's
        ``name_en``, its Chinese name where it has none)."""
        return "/".join(self.path_en[1:]) or self.name_en


@dataclass(frozen=True)
class IntakeConfig:
    """The lists of ``config/intake.toml`` checked against the department directory."""

    request_types: tuple[Mapping[str, str], ...]
    reply_methods: tuple[Mapping[str, str], ...]
    categories: tuple[CategoryNode, ...]
    districts: Mapping[str, tuple[str, ...]]
    leaves: Mapping[str, CategoryNode] = field(default_factory=dict)
    #: District and street names -> their English names (``name_en``; only those given).
    places_en: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], directory: Directory) -> IntakeConfig:
        """Build and check: unknown departments or duplicate leaf labels are ValueError."""
        known = {d.id for d in directory.departments}
        owners: dict[str, list[str]] = {}
        for d in directory.departments:
            for category in d.categories:
                owners.setdefault(category, []).append(d.id)

        def node(raw: Mapping[str, Any], parent: tuple[str, ...], inherited: tuple[str, ...],
                 parent_en: tuple[str, ...] = ()) -> CategoryNode:
            name = str(raw["name"])
            name_en = str(raw.get("name_en") or name)
            path, path_en = (*parent, name), (*parent_en, name_en)
            explicit = tuple(raw.get("departments", ()))
            unknown = set(explicit) - known
            if unknown:
                raise ValueError(f"category {name}: unknown departments {sorted(unknown)}")
            departments = explicit or tuple(owners.get(name, ())) or inherited
            children = tuple(node(c, path, departments, path_en)
                             for c in raw.get("children", ()))
            return CategoryNode(name, name_en, path, departments, children, path_en)

        tops = tuple(node(raw, (), ()) for raw in data.get("category", ()))
        leaves: dict[str, CategoryNode] = {}

        def collect(n: CategoryNode) -> None:
            if not n.children:
                if n.label in leaves:
                    raise ValueError(f"category {n.label} is listed twice")
                leaves[n.label] = n
            for c in n.children:
                collect(c)

        for top in tops:
            collect(top)
        # A district or street is a name, or a table {name, name_en} for the English UI.
        districts: dict[str, tuple[str, ...]] = {}
        places_en: dict[str, str] = {}

        def place(raw: Any) -> str:
            if not isinstance(raw, Mapping):
                return str(raw)
            if raw.get("name_en"):
                places_en[str(raw["name"])] = str(raw["name_en"])
            return str(raw["name"])

        for d in data.get("district", ()):
            districts[place(d)] = tuple(place(s) for s in d.get("streets", ()))
        return cls(tuple(data.get("request_types", ())), tuple(data.get("reply_methods", ())),
                   tops, districts, leaves, places_en)

    @classmethod
    def load(cls, directory: Directory, config_dir: Path = CONFIG_DIR) -> IntakeConfig:
        """Read ``config_dir/intake.toml``."""
        with open(config_dir / "intake.toml", "rb") as f:
            return cls.from_mapping(tomllib.load(f), directory)

    def codes(self, key: str) -> tuple[str, ...]:
        """The codes a ``code`` field may take ("" = not chosen yet)."""
        if key == "gender":
            return GENDERS
        if key == "urgency":
            return ("", *(str(u) for u in Urgency))
        table = self.request_types if key == "request_type" else self.reply_methods
        return ("", *(str(t["code"]) for t in table))

    def public(self, directory: Directory) -> dict[str, Any]:
        """The form's lists as JSON, departments with their names."""
        names = {d.id: {"id": d.id, "name": d.name, "name_en": d.name_en}
                 for d in directory.departments}

        def tree(n: CategoryNode) -> dict[str, Any]:
            return {"name": n.name, "name_en": n.name_en, "label": n.label,
                    "label_en": n.label_en,
                    "departments": [names[d] for d in n.departments],
                    "children": [tree(c) for c in n.children]}

        return {"request_types": [dict(t) for t in self.request_types],
                "reply_methods": [dict(t) for t in self.reply_methods],
                "categories": [tree(n) for n in self.categories],
                "districts": [{"name": d, "name_en": self.places_en.get(d, d), "streets": list(s),
                               "streets_en": [self.places_en.get(x, x) for x in s]}
                              for d, s in self.districts.items()]}


def clean_fields(config: IntakeConfig, data: Any) -> dict[str, Any]:
    """A draft's structured fields from a browser: known keys, right types, bounded.

    Unknown keys are ignored; a wrong type, an over-long text or a code not in the
    configured lists is :class:`IntakeError`.  Free text is allowed for the category
    path, district and street (an address outside the lists is still an address).
    """
    if not isinstance(data, Mapping):
        raise IntakeError("'fields' must be an object")
    out: dict[str, Any] = {}
    for key, (kind, max_len) in DRAFT_KEYS.items():
        if key not in data:
            continue
        value = data[key]
        if kind == "bool":
            if not isinstance(value, bool):
                raise IntakeError(f"'{key}' must be true or false")
            out[key] = value
            continue
        if not isinstance(value, str):
            raise IntakeError(f"'{key}' must be a string")
        if key == "callback":  # full-width digits and signs from a Chinese IME: plain
            value = plain_number(value)
        value = value.strip()
        if len(value) > max_len:
            raise IntakeError(f"'{key}' is longer than {max_len} characters")
        if any(ord(ch) < 32 for ch in value):
            raise IntakeError(f"'{key}' contains control characters")
        if key == "callback" and not CALLBACK_CHARS.fullmatch(value):
            raise IntakeError("'callback' is a phone number: digits, a leading +, -, (), "
                              "spaces, and 转 before an extension",
                              zh="回复号码只能填数字、开头的+、-、括号、空格，分机号前加“转”",
                              code="intake.callback")
        if kind == "code" and value not in config.codes(key):
            raise IntakeError(f"'{key}' must be one of {', '.join(config.codes(key)[1:])}")
        out[key] = value
    return out


def problems_for_submit(fields: Mapping[str, Any], text: str, caller: str) -> list[str]:
    """What is missing before a draft may become an order (empty list: nothing)."""
    problems = []
    if not text.strip():
        problems.append("text")
    if not fields.get("request_type"):
        problems.append("request_type")
    if not fields.get("category"):
        problems.append("category")
    callback = str(fields.get("callback", ""))
    if ((not (callback or caller) and fields.get("reply_method", "phone") != "none")
            or (callback and not callback_complete(callback))):
        problems.append("callback")
    return problems


def address_of(fields: Mapping[str, Any]) -> str:
    """事发地址 as one line: district, street, detail."""
    return "".join(str(fields.get(k, "")) for k in ("district", "street", "address"))


def order_parts(fields: Mapping[str, Any], caller_number: str, article_id: str = ""
                ) -> dict[str, Any]:
    """The keyword arguments of ``WorkOrders.create`` the structured fields give."""
    address = address_of(fields)
    return {
        "caller": Caller(name=str(fields.get("caller_name", "")), number=caller_number,
                         address=address),
        "category": str(fields.get("category", "")),
        "urgency": Urgency(fields.get("urgency") or "normal"),
        "confidential": bool(fields.get("confidential", False)),
        "location": address,
        "intake": Intake(request_type=str(fields.get("request_type", "")),
                         gender=str(fields.get("gender", "")),
                         callback_number=str(fields.get("callback", "")),
                         district=str(fields.get("district", "")),
                         street=str(fields.get("street", "")),
                         reply_method=str(fields.get("reply_method", "")),
                         article_id=article_id),
    }
