"""Text planning: a request's text through the front end once, split into sentences, its long-text mode decided.

:func:`plan_text` is the only place a request's text goes through :mod:`vallex.text`; the HTTP API calls it before it
answers (to know the long-text mode), :func:`vallex.synthesis.request.plan_request` for every other request.
"""
from __future__ import annotations

from dataclasses import dataclass

from vallex.languages import Languages
from vallex.text import TextTokens, detect_language, split_sentences, tokenize
from vallex.text.normalize import MAX_INPUT_CHARS, SPLIT_ADVICE, has_pronounceable

#: Target text tokens one utterance may hold without the long-text mode (~15-20 s of speech).
MAX_SINGLE_UTTERANCE_TOKENS = 300

LONG_TEXT_MODES = ("fixed-prompt", "sliding-window")
#: ``long_text="auto"``: one utterance when the text fits, else ``"fixed-prompt"`` (the HTTP API's default).
AUTO_LONG_TEXT = "auto"


@dataclass(frozen=True)
class TextPlan:
    """A text through the front end once: its sentences (each with its tokens), language and long-text mode."""

    sentences: tuple[tuple[str, TextTokens], ...]
    language: str
    long_text: str | None  # the mode used: None (one utterance), "fixed-prompt" or "sliding-window"


def plan_text(text: str, language: str = "auto", long_text: str | None = None,
              languages: Languages | None = None) -> TextPlan:
    """Split ``text`` into sentences and run the text front end on each, once; ValueError for what cannot be spoken.

    ``long_text``: None (one utterance), ``"fixed-prompt"``, ``"sliding-window"`` or ``"auto"`` (one utterance
    when it fits in :data:`MAX_SINGLE_UTTERANCE_TOKENS`, else fixed-prompt). ``languages``: the model's
    (``VallEX.languages``; default the public checkpoint's).
    """
    table = languages or Languages.public()
    if long_text is not None and long_text not in (*LONG_TEXT_MODES, AUTO_LONG_TEXT):
        raise ValueError(f"Unknown long-text mode {long_text!r}: expected one of "
                         f"{', '.join(LONG_TEXT_MODES)} (or 'auto').")
    if long_text == AUTO_LONG_TEXT:
        if len(text) <= MAX_INPUT_CHARS:
            try:
                sentences, language_used = _split(text, language, None, table)
                return TextPlan(tuple(sentences), language_used, None)
            except _TooLongForOneUtterance:
                pass
        long_text = "fixed-prompt"
    sentences, language_used = _split(text, language, long_text, table)
    return TextPlan(tuple(sentences), language_used, long_text)


class _TooLongForOneUtterance(ValueError):
    """The text needs the long-text mode (``long_text="auto"`` then takes it)."""


def _split(text: str, language: str, long_text: str | None,
           table: Languages) -> tuple[list[tuple[str, TextTokens]], str]:
    if not isinstance(text, str) or not text.strip():
        raise ValueError("Text is empty: type the sentence you want to hear.")
    if language not in ("auto", "mix", "auto-mix"):
        table.check(language)
    if long_text is None:
        if len(text) > MAX_INPUT_CHARS:  # before the front end, whose message knows nothing of long text
            raise ValueError(
                f"The text is too long for one utterance ({len(text)} characters; at most "
                f"{MAX_INPUT_CHARS}). Use long-text mode (long_text='fixed-prompt' or 'sliding-window'), "
                "which speaks it sentence by sentence."
            )
        tokens = tokenize(text, language, max_tokens=None, languages=table)  # our own, friendlier limit below
        if len(tokens) > MAX_SINGLE_UTTERANCE_TOKENS:
            raise _TooLongForOneUtterance(
                f"The text is too long for one utterance ({len(tokens)} phonemes; at most "
                f"{MAX_SINGLE_UTTERANCE_TOKENS}). Use long-text mode (long_text='fixed-prompt' or "
                "'sliding-window'), which speaks it sentence by sentence."
            )
        return [(text, tokens)], tokens.language
    # Long text: detect the language once on the whole text, as the reference does, then split.
    if language == "auto":
        language = detect_language(text, table.codes)
    planned = []
    for sentence in split_sentences(text, language, table):  # "mix" sentences come back with their tags
        if not has_pronounceable(sentence):
            continue  # a stray punctuation-only piece between sentences
        if len(sentence) > MAX_INPUT_CHARS:
            raise ValueError(
                f"The text runs {len(sentence)} characters without a sentence end (at most "
                f"{MAX_INPUT_CHARS} in one sentence), from {sentence[:40]!r}. {SPLIT_ADVICE}"
            )
        tokens = tokenize(sentence, language, max_tokens=None, languages=table)
        if len(tokens) > MAX_SINGLE_UTTERANCE_TOKENS:
            raise ValueError(
                f"A sentence is too long to speak in one go ({len(tokens)} phonemes; at most "
                f"{MAX_SINGLE_UTTERANCE_TOKENS}): {sentence[:60]!r}... Add punctuation to split it."
            )
        planned.append((sentence, tokens))
    if not planned:
        raise ValueError("The text has nothing to pronounce.")
    return planned, language
