"""The IVR's prompts as sound files: every prompt ``config/ivr.toml`` names, spoken from
the texts kept there (``[texts."<prompt>"] zh = … en = …``) by espeak-ng and written as
8 kHz mono 16-bit WAV, which Asterisk plays natively (``format_wav``).

Layout: ``<out>/<lang>/<prompt>.wav``, e.g. ``sounds/zh/hotline/welcome.wav``; Asterisk
looks a prompt up as ``<astdatadir>/sounds/<channel language>/<prompt>.<format>``
(``/usr/share/asterisk/sounds`` on Debian).  A centre replaces a spoken prompt with
a recorded voice by dropping a file of the same name there; :func:`build` never
overwrites a file it did not write itself unless ``force``.

espeak-ng speaks Mandarin with the voice ``cmn`` and English with ``en``; sox
resamples its 22,050 Hz output to 8,000 Hz.  Both are Debian packages (``./run``
installs them).
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VOICES = {"zh": "cmn", "en": "en"}
RATE = 8000
MARKER = ".espeak"  # sibling file saying "this prompt was generated, rebuild freely"


class PromptError(Exception):
    """A prompt cannot be built (the message says which and why, in one line)."""


def prompt_names(raw: Mapping[str, Any], states: Iterable[str] = ()) -> list[str]:
    """Every prompt ``ivr.toml`` (parsed, ``raw``) names, sorted; ``states`` are the
    order states self-service appends to ``status_prompt_prefix``."""
    names: set[str] = set()

    def add(table: Mapping[str, Any], *keys: str) -> None:
        for k in keys:
            if isinstance(table.get(k), str) and table[k]:
                names.add(table[k])

    add(raw, "welcome")
    add(raw.get("language", {}), "prompt")
    for menu in raw.get("menus", {}).values():
        names.update((menu.get("invalid_prompt", "hotline/invalid"),
                      menu.get("timeout_prompt", "hotline/no-input")))
        add(menu, "prompt")
    add(raw.get("callback", {}), "prompt", "confirm_prompt")
    ss = raw.get("selfservice", {})
    add(ss, "prompt", "not_found_prompt")
    prefix = ss.get("status_prompt_prefix")
    if prefix:
        names.update(prefix + s for s in states)
    add(raw.get("survey", {}), "prompt", "thanks_prompt")
    add(raw.get("returnvisit", {}), "intro_prompt", "resolved_prompt", "operator_prompt",
        "department_prompt", "thanks_prompt")
    names.add("hotline/invalid")  # the questionnaires' invalid-key prompt
    return sorted(names)


def texts(raw: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """``[texts]``: prompt -> {lang: text}."""
    return {str(k): {str(lang): str(t) for lang, t in v.items()}
            for k, v in raw.get("texts", {}).items() if isinstance(v, Mapping)}


def missing_texts(raw: Mapping[str, Any], states: Iterable[str] = (),
                  langs: Iterable[str] = tuple(VOICES)) -> list[str]:
    """``prompt:lang`` pairs named in the config without a text."""
    t = texts(raw)
    return [f"{p}:{lang}" for p in prompt_names(raw, states) for lang in langs
            if not t.get(p, {}).get(lang)]


def wav_ok(path: Path) -> bool:
    """A WAV Asterisk plays as it is: 8 kHz, mono, 16-bit PCM, some samples."""
    try:
        with wave.open(str(path), "rb") as w:
            return (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2) \
                and w.getnframes() > 0
    except (OSError, wave.Error, EOFError):
        return False


@dataclass(frozen=True)
class Built:
    written: list[Path]
    kept: list[Path]  # recorded files of the same name, left alone


def _speak(text: str, lang: str, out: Path, espeak: str, sox: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.wav")
    try:
        subprocess.run([espeak, "-v", VOICES[lang], "-s", "150", "-w", str(tmp), text],
                       check=True, capture_output=True, timeout=60)
        subprocess.run([sox, str(tmp), "-r", str(RATE), "-c", "1", "-b", "16",
                        "-e", "signed-integer", str(out)],
                       check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise PromptError(f"cannot speak {out.name} ({lang}): {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def build(raw: Mapping[str, Any], out: Path, *, states: Iterable[str] = (),
          langs: Iterable[str] = tuple(VOICES), force: bool = False,
          espeak: str | None = None, sox: str | None = None) -> Built:
    """Speak every prompt in every language into ``out``; recorded files stay unless
    ``force``.  PromptError when a text is missing or a tool is not installed."""
    states = list(states)
    langs = list(langs)
    gaps = missing_texts(raw, states, langs)
    if gaps:
        raise PromptError(f"no text in ivr.toml [texts] for {', '.join(gaps[:5])}"
                          + (" ..." if len(gaps) > 5 else ""))
    espeak = espeak or shutil.which("espeak-ng")
    sox = sox or shutil.which("sox")
    if not espeak or not sox:
        raise PromptError("espeak-ng and sox are needed: apt-get install espeak-ng sox")
    t = texts(raw)
    written, kept = [], []
    for name in prompt_names(raw, states):
        for lang in langs:
            path = out / lang / f"{name}.wav"
            marker = path.with_name(path.name + MARKER)
            if path.exists() and not marker.exists() and not force:
                kept.append(path)
                continue
            _speak(t[name][lang], lang, path, espeak, sox)
            marker.write_text(t[name][lang], encoding="utf-8")
            written.append(path)
    return Built(written, kept)


def present(names: Iterable[str], root: Path, langs: Iterable[str] = tuple(VOICES),
            formats: Iterable[str] = ("wav", "WAV", "gsm", "ulaw", "alaw", "sln", "g722")
            ) -> list[str]:
    """The ``lang/prompt`` files missing under ``root`` (any format Asterisk plays)."""
    formats = list(formats)
    return [f"{lang}/{n}" for n in names for lang in langs
            if not any((root / lang / f"{n}.{ext}").is_file() for ext in formats)]
