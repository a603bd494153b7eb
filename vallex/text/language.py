"""Language detection (langid restricted to the model's languages) and automatic tagging of mixed-script text.

The reference calls ``langid.set_languages(['en', 'zh', 'ja'])`` on langid's global identifier at import.
We build a private ``LanguageIdentifier`` per set of languages on first use instead and restrict that one,
which gives the same scores without changing langid for anyone else in the process. A model trained on more
languages detects among all of them (each that langid knows: ``fr-fr`` is langid's ``fr``).
"""
from __future__ import annotations

import copy
import functools
from collections.abc import Sequence

from vallex.languages import CJK_LANGUAGES, LANGUAGES, language_tag

from .normalize import script_of


@functools.lru_cache(maxsize=1)
def _full_identifier():
    """langid's identifier over its 97 languages (its model is decoded once: about a second)."""
    from langid.langid import LanguageIdentifier, model

    return LanguageIdentifier.from_modelstring(model, norm_probs=False)


@functools.lru_cache(maxsize=8)
def _identifier(langid_codes: tuple[str, ...] = LANGUAGES):
    # set_languages assigns new, trimmed arrays: a shallow copy restricts itself and leaves the full one whole.
    identifier = copy.copy(_full_identifier())
    identifier.set_languages(list(langid_codes))
    return identifier


def _langid_codes() -> frozenset[str]:
    """The 97 languages langid's model knows."""
    return frozenset(_full_identifier().nb_classes)


def _detectable(languages: Sequence[str]) -> dict[str, str]:
    """langid's code -> the model's code, for each of ``languages`` langid can detect (first code wins)."""
    if tuple(languages) == LANGUAGES:
        return {code: code for code in LANGUAGES}  # the reference's set, without reading langid's table
    detectable: dict[str, str] = {}
    for code in languages:
        base = code.split("-")[0]
        if base in _langid_codes():
            detectable.setdefault(base, code)
    return detectable


def classify(text: str, languages: Sequence[str] = LANGUAGES) -> tuple[str, float]:
    """langid's answer restricted to ``languages`` (default en/zh/ja): (language, unnormalised log-probability
    score). The language is the model's code (``fr-fr`` for a model that speaks ``fr-fr``)."""
    detectable = _detectable(languages)
    if not detectable:
        raise ValueError(f"None of the languages {', '.join(languages)} can be detected: give the language.")
    lang, score = _identifier(tuple(detectable)).classify(text)  # reads the model only: safe from several threads
    return detectable[lang], float(score)


def has_kana(text: str) -> bool:
    """True if ``text`` has a hiragana or katakana character (only Japanese uses them)."""
    return any(script_of(c) == "kana" for c in text)


def detect_language(text: str, languages: Sequence[str] = LANGUAGES) -> str:
    """The language ``language='auto'`` picks for ``text`` among ``languages`` (a model's; default en/zh/ja,
    where it is what the reference picks).

    This is langid restricted to those languages (on text as given; callers strip it as generate_audio does).
    One improvement: text written only in kana (plus digits, punctuation and spaces, no Han or Latin
    letters) is Japanese whatever langid says. langid gets kana sentences right but misreads some very
    short kana strings (e.g. "ホ" -> zh; ~6% of random 1-8 kana strings), so real sentences keep the
    reference's result. Kanji-only Japanese (which langid often reads as Mandarin) cannot be told apart
    from Mandarin by script and is left to langid.
    """
    if not isinstance(text, str):
        raise ValueError(f"Text must be a string, not {type(text).__name__}.")
    scripts = {script_of(c) for c in text}
    if "ja" in languages and "kana" in scripts and not scripts & {"han", "latin"}:
        return "ja"
    return classify(text, languages)[0]


def auto_tag(text: str, languages: Sequence[str] = LANGUAGES) -> str:
    """Tag runs of alphabetic vs CJK script so mixed text needs no hand-written tags (our "auto-mix").

    Rule:
    - Characters are Latin letters (incl. fullwidth; with a model that speaks espeak-ng languages, letters of
      any other alphabet too), CJK (Han, kana, bopomofo), or neutral (digits, spaces, punctuation). A neutral
      character joins the run before it; neutral characters at the start join the first run.
    - An alphabetic run is English for the public checkpoint; a model that speaks more non-CJK languages
      gives it the one langid picks among them (:func:`detect_language` on the run).
    - A CJK run is Japanese if it has kana, or if the text has kana anywhere else (Japanese with embedded
      English: "今日はGoogleで検索"); otherwise (Han only, no kana anywhere) it is Mandarin. Kanji-only
      Japanese cannot be told from Mandarin by script (langid is unreliable on short Han runs both ways),
      so tag such text by hand ("mix") or pass language="ja".
    - Adjacent runs of the same language are merged; each run is wrapped in its tag.
    Text with no letters at all is one run in the language :func:`detect_language` picks.
    """
    alphabetic = [code for code in languages if code not in CJK_LANGUAGES]
    other_scripts = any(code not in LANGUAGES for code in alphabetic)  # an espeak-ng language may use them
    runs: list[list] = []  # [kind, text] with kind "latin", "cjk" or None (no letter yet)
    for char in text:
        script = script_of(char)
        if script == "latin" or (script == "other" and other_scripts):
            kind = "latin"
        else:
            kind = "cjk" if script in ("han", "kana", "bopomofo") else None
        if runs and (kind is None or runs[-1][0] in (kind, None)):
            runs[-1][1] += char
            if runs[-1][0] is None:
                runs[-1][0] = kind
        else:
            runs.append([kind, char])
    text_has_kana = has_kana(text)
    tagged: list[list[str]] = []  # [language, text]
    for kind, chunk in runs:
        if kind == "latin":
            lang = _alphabetic_language(chunk, alphabetic)
        elif kind == "cjk":
            lang = "ja" if text_has_kana or "zh" not in languages else "zh"
        else:
            lang = detect_language(text, languages)
        if lang not in languages:
            raise ValueError(f"{chunk.strip()!r} is written like {lang}, which this model does not speak "
                             f"({', '.join(languages)}): give the language, or tag the text by hand ('mix').")
        if tagged and tagged[-1][0] == lang:
            tagged[-1][1] += chunk
        else:
            tagged.append([lang, chunk])
    return "".join(f"{language_tag(lang)}{chunk}{language_tag(lang)}" for lang, chunk in tagged)


def _alphabetic_language(run: str, alphabetic: Sequence[str]) -> str:
    """The language of a run of alphabetic letters: the only non-CJK language, else langid's pick among them."""
    if len(alphabetic) == 1:
        return alphabetic[0]
    if not alphabetic:
        raise ValueError("The text has letters, but the model speaks only Chinese-script languages: give the "
                         "language.")
    return classify(run, alphabetic)[0] if _detectable(alphabetic) else alphabetic[0]
