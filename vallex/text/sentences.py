"""Sentence splitting for long text (English, Mandarin, Japanese, and the alphabetic languages a model was
trained on), rule based.

The reference used NLTK Punkt pickles for English (unsafe to load, and broken on NLTK >= 3.9), jieba for
Mandarin and SudachiPy for Japanese. Sentence ends are marked by punctuation in all three, so a few rules
do the job with no model files:

- Always a boundary: after 。 ！ ？ ｡ (and after ……/… in Mandarin/Japanese), plus any closing quotes or
  brackets that follow (」』”’）"' ...).
- ``!`` and ``?`` (runs such as ``?!``): a boundary before whitespace or the end; in Mandarin/Japanese
  text also directly before the next character (the reference's Mandarin splitter ignored ASCII !?).
- ``.`` and ``...``: a boundary before whitespace (or the end) unless the word before is a known
  abbreviation ("Dr.", "Mrs.", "e.g.", ...) or a single capital initial ("J. K. Rowling"), and unless the
  next word starts with a lowercase letter ("U.S. government", "approx. five"). Decimals ("3.14") never
  split since no space follows.
- Never inside a quotation or bracket pair that closes later (「はい。」と言った。 is one sentence).
- A blank line (paragraph break) is always a boundary; single newlines are just spaces.
"""
from __future__ import annotations

import re

from vallex.languages import CJK_LANGUAGES, Languages, language_tag

from .cleaners import find_segments, segment_language
from .language import detect_language

# Lowercase words that end with "." without ending the sentence (titles, common short forms).
_ABBREVIATIONS = frozenset("""
mr mrs ms mx dr prof sr jr st mt rev hon gen col lt capt sgt maj cmdr adm gov pres sen rep esq ft
vs etc e.g i.e cf al approx no nos vol fig figs ch sec p pp ed eds inc ltd co corp dept est
jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thur thurs fri sat sun
ave blvd rd
""".split()) - {"etc"}  # "etc." ends sentences far more often than not

_CJK_STOPS = "。！？｡"
_CLOSERS = "”’\"'」』）)】》〉]"
_TERMINATOR_RE = re.compile(r"(\.{2,}|…+|[.!?！？。｡]+)([" + re.escape(_CLOSERS) + r"]*)")
_WORD_BEFORE_RE = re.compile(r"([A-Za-z][A-Za-z.]*)$")
_PARAGRAPH_RE = re.compile(r"\n\s*\n")
_WORD_CHAR_RE = re.compile(r"\w")

SPLIT_LANGUAGES = Languages.public().text_choices


_BRACKETS = {"「": "」", "『": "』", "（": "）", "【": "】", "《": "》", "〈": "〉", "“": "”"}


def _inside_brackets(text: str, pos: int) -> bool:
    """True if ``pos`` is inside a quotation/bracket pair that is closed later (「はい。」と言った。)."""
    before, after = text[:pos], text[pos:]
    return any(before.count(o) > before.count(c) and c in after for o, c in _BRACKETS.items())


def _is_boundary(text: str, match: re.Match, cjk: bool) -> bool:
    term = match.group(1)
    end = match.end()
    rest = text[end:]
    next_char = rest[:1]
    if _inside_brackets(text, match.start()):
        return False  # a quoted sentence stays inside the sentence that quotes it
    if any(c in _CJK_STOPS for c in term):
        return True
    if "!" in term or "?" in term:
        return not next_char or next_char.isspace() or cjk
    if term[0] == "…" or term.startswith(".."):
        if cjk:
            return True
    # "." or an ellipsis in Latin text: needs a space (or the end) after it.
    if next_char and not next_char.isspace():
        return False
    following = rest.lstrip()
    if not following:
        return True
    if following[0].islower():
        return False  # "e.g. this", "U.S. government": the sentence goes on
    if term == ".":
        word = _WORD_BEFORE_RE.search(text[: match.start()])
        if word:
            token = word.group(1)
            if token.lower() in _ABBREVIATIONS or (len(token) == 1 and token.isupper()):
                return False
    return True


def _split_plain(text: str, cjk: bool) -> tuple[list[str], bool]:
    """Split untagged text; also say whether the last piece ended at a boundary."""
    pieces: list[str] = []
    closed = False
    for paragraph in _PARAGRAPH_RE.split(text):
        paragraph = paragraph.replace("\n", " ")
        start = 0
        for match in _TERMINATOR_RE.finditer(paragraph):
            if _is_boundary(paragraph, match, cjk):
                pieces.append(paragraph[start: match.end()])
                start = match.end()
        pieces.append(paragraph[start:])
    pieces = [p.strip() for p in pieces]
    closed = bool(pieces) and pieces[-1] == ""
    out: list[str] = []
    for piece in pieces:
        if not piece:
            continue
        if out and not _WORD_CHAR_RE.search(piece):
            out[-1] += piece  # stray punctuation (a lone closing quote) belongs to the sentence before
        else:
            out.append(piece)
    return out, closed


def _split_tagged(text: str, languages: Languages) -> list[str]:
    """Split tagged ("mix") text; every returned sentence is tagged again, segment by segment."""
    sentences: list[str] = []
    current = ""
    for segment in find_segments(text, languages.codes):
        lang = segment_language(segment, languages.codes)
        tag = language_tag(lang)
        inner = segment[len(tag): -len(tag)]
        pieces, closed = _split_plain(inner, cjk=lang in CJK_LANGUAGES)
        for i, piece in enumerate(pieces):
            current += f"{tag}{piece}{tag}"
            if i < len(pieces) - 1 or closed:
                sentences.append(current)
                current = ""
    if current:
        sentences.append(current)
    return sentences


def split_sentences(text: str, language: str = "auto", languages: Languages | None = None) -> list[str]:
    """Split long text into sentences to synthesise one at a time.

    Args:
        text: the text. For "mix" it must be tagged (``[EN]..[EN][ZH]..[ZH]``); the sentences come back
            tagged, so tokenize them with language="mix".
        language: a language of ``languages``, "auto" (langid on the whole text, as the reference), "mix", or
            "auto-mix" (mixed untagged text: Mandarin/Japanese rules, which also cover English). Languages
            other than zh/ja follow the English rules.
        languages: the model's languages (default the public checkpoint's en/zh/ja).

    Returns:
        Non-empty, stripped sentences in order (an empty list for blank text). Only whitespace is removed:
        joining them with spaces gives back the text's words.
    """
    table = languages or Languages.public()
    if not isinstance(text, str):
        raise ValueError(f"Text must be a string, not {type(text).__name__}.")
    if language not in table.text_choices:
        raise ValueError(f"Unknown language {language!r}: expected one of {', '.join(table.text_choices)}.")
    if not text.strip():
        return []
    if language == "mix":
        return _split_tagged(text, table)
    if language == "auto":
        language = detect_language(text.replace("\n", " ").strip(), table.codes)
    return _split_plain(text, cjk=language in (*CJK_LANGUAGES, "auto-mix"))[0]
