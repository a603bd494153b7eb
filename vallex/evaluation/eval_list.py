"""Evaluation lists: one line per utterance to synthesise and score.

JSONL (one JSON object per line; blank lines are skipped)::

    {"id": "zh2en_001", "prompt_audio": "prompts/zh_spk1.wav", "prompt_text": "我们一起去公园散步吧。",
     "prompt_language": "zh", "text": "Let us take a walk in the park.", "language": "en",
     "reference_audio": "gt/zh2en_001.wav"}

Required: ``prompt_audio``, ``prompt_text``, ``text``, ``language`` (en, zh, ja). Optional: ``id``
(``^[A-Za-z0-9_-]{1,64}$``, unique; default ``line<N>`` with N the 1-based line number),
``prompt_language`` (default: detected from ``prompt_text``), ``reference_audio`` (a real recording of
``text``, scored like the output). Relative paths are relative to the list's folder. Unknown fields are
refused, so that a misspelt optional field is not silently ignored.

Seed-TTS-eval ``meta.lst`` files (``id|prompt_text|prompt_wav|text`` with an optional fifth field, the
ground-truth wav) are read by :func:`read_seedtts_list`, which needs the language (the file does not say).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vallex.languages import LANGUAGES, normalize_language

# An id names its output file, so it follows the rule of preset names: never a path.
from vallex.prompts import NAME_PATTERN

REQUIRED_FIELDS = ("prompt_audio", "prompt_text", "text", "language")
OPTIONAL_FIELDS = ("id", "prompt_language", "reference_audio")


@dataclass(frozen=True)
class EvalItem:
    """One line of an evaluation list (paths resolved, fields checked)."""

    id: str
    prompt_audio: Path
    prompt_text: str
    text: str
    language: str  # "en" | "zh" | "ja": language of ``text`` (and of the ASR / error metric)
    prompt_language: str | None = None  # None: detected from prompt_text
    reference_audio: Path | None = None
    line: int = 0  # 1-based line in the list file (for messages)


def _fail(source: Path, line: int, message: str) -> ValueError:
    return ValueError(f"{source}, line {line}: {message}")


def _language(value: object, source: Path, line: int, field: str) -> str:
    if not isinstance(value, str):
        raise _fail(source, line, f"field {field!r} must be a string, one of {', '.join(LANGUAGES)}.")
    try:
        code = normalize_language(value)
    except ValueError:
        code = None
    if code not in LANGUAGES:
        raise _fail(source, line, f"field {field!r} is {value!r}; expected one of {', '.join(LANGUAGES)}.")
    return code


def _audio_path(value: object, base: Path, source: Path, line: int, field: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, line, f"field {field!r} must be a non-empty path to an audio file.")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise _fail(source, line, f"field {field!r}: audio file {path} does not exist (relative paths are "
                                  f"read from the list's folder {base}).")
    return path


def _text(value: object, source: Path, line: int, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, line, f"field {field!r} must be a non-empty string.")
    return value.strip()


def _item(record: dict, base: Path, source: Path, line: int) -> EvalItem:
    missing = [name for name in REQUIRED_FIELDS if name not in record]
    if missing:
        raise _fail(source, line, f"missing field(s) {', '.join(repr(m) for m in missing)}; every line needs "
                                  f"{', '.join(REQUIRED_FIELDS)}.")
    unknown = sorted(set(record) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise _fail(source, line, f"unknown field(s) {', '.join(repr(u) for u in unknown)}; allowed: "
                                  f"{', '.join(REQUIRED_FIELDS + OPTIONAL_FIELDS)}.")
    item_id = record.get("id", f"line{line:05d}")
    if not isinstance(item_id, str) or not NAME_PATTERN.fullmatch(item_id):
        raise _fail(source, line, f"field 'id' is {item_id!r}; use 1-64 letters, digits, '_' or '-' "
                                  "(it names the output file).")
    prompt_language = record.get("prompt_language")
    reference = record.get("reference_audio")
    return EvalItem(
        id=item_id,
        prompt_audio=_audio_path(record["prompt_audio"], base, source, line, "prompt_audio"),
        prompt_text=_text(record["prompt_text"], source, line, "prompt_text"),
        text=_text(record["text"], source, line, "text"),
        language=_language(record["language"], source, line, "language"),
        prompt_language=None if prompt_language is None else _language(prompt_language, source, line,
                                                                          "prompt_language"),
        reference_audio=None if reference is None else _audio_path(reference, base, source, line,
                                                                   "reference_audio"),
        line=line,
    )


def _check_unique(items: list[EvalItem], source: Path) -> list[EvalItem]:
    seen: dict[str, int] = {}
    for item in items:
        if item.id in seen:
            raise _fail(source, item.line, f"id {item.id!r} is already used on line {seen[item.id]}; ids must be "
                                           "unique (they name the output files).")
        seen[item.id] = item.line
    if not items:
        raise ValueError(f"{source} holds no evaluation lines.")
    return items


def read_jsonl_list(path: str | Path) -> list[EvalItem]:
    """Read a JSONL evaluation list; a ValueError names the line and field of the first problem."""
    source = Path(path)
    if not source.is_file():
        raise ValueError(f"Evaluation list {source} does not exist.")
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{source} is not UTF-8 text.") from None
    items = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as error:
            raise _fail(source, number, f"not valid JSON ({error.msg} at column {error.colno}); each line must be "
                                        "one JSON object.") from None
        if not isinstance(record, dict):
            raise _fail(source, number, f"expected a JSON object, got {type(record).__name__}.")
        items.append(_item(record, source.parent, source, number))
    return _check_unique(items, source)


def read_seedtts_list(path: str | Path, language: str) -> list[EvalItem]:
    """Read a Seed-TTS-eval ``meta.lst``: ``id|prompt_text|prompt_wav|text[|reference_wav]`` per line."""
    source = Path(path)
    if not source.is_file():
        raise ValueError(f"Evaluation list {source} does not exist.")
    language = _language(language, source, 0, "language")
    items = []
    for number, raw in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        fields = raw.strip().split("|")
        if len(fields) not in (4, 5):
            raise _fail(source, number, f"expected 4 or 5 '|'-separated fields (id|prompt_text|prompt_wav|text"
                                        f"[|reference_wav]), got {len(fields)}.")
        record = {"id": fields[0], "prompt_text": fields[1], "prompt_audio": fields[2], "text": fields[3],
                  "language": language}
        if len(fields) == 5 and fields[4].strip():
            record["reference_audio"] = fields[4]
        items.append(_item(record, source.parent, source, number))
    return _check_unique(items, source)


def read_eval_list(path: str | Path, language: str | None = None) -> list[EvalItem]:
    """A ``.jsonl`` list, or a Seed-TTS-eval ``.lst`` list (which needs ``language``)."""
    if Path(path).suffix.lower() == ".lst":
        if language is None:
            raise ValueError(f"{path} is a Seed-TTS-eval list, which does not say its language: pass --language "
                             "en, zh or ja.")
        return read_seedtts_list(path, language)
    return read_jsonl_list(path)
