"""Language detection (langid restricted to en/zh/ja) and automatic tagging of mixed-script text.

The reference calls ``langid.set_languages(['en', 'zh', 'ja'])`` on langid's global identifier at import.
We build a private ``LanguageIdentifier`` on first use instead and restrict that one, which gives the same
scores without changing langid for anyone else in the process.
"""
from __future__ import annotations

import functools

from .cleaners import TAGS
from .normalize import script_of

_DETECTABLE = ["en", "zh", "ja"]


@functools.lru_cache(maxsize=1)
def _identifier():
    from langid.langid import LanguageIdentifier, model

    identifier = LanguageIdentifier.from_modelstring(model, norm_probs=False)
    identifier.set_languages(_DETECTABLE)
    return identifier


def classify(text: str) -> tuple[str, float]:
    """langid's answer restricted to en/zh/ja: (language, unnormalised log-probability score)."""
    lang, score = _identifier().classify(text)  # reads the model only: safe from several threads
    return lang, float(score)


def has_kana(text: str) -> bool:
    """True if ``text`` has a hiragana or katakana character (only Japanese uses them)."""
    return any(script_of(c) == "kana" for c in text)


def detect_language(text: str) -> str:
    """The language ("en", "zh" or "ja") the reference's ``language='auto'`` picks for ``text``.

    This is langid restricted to en/zh/ja (on text as given; callers strip it as generate_audio does).
    One improvement: text written only in kana (plus digits, punctuation and spaces, no Han or Latin
    letters) is Japanese whatever langid says. langid gets kana sentences right but misreads some very
    short kana strings (e.g. "ホ" -> zh; ~6% of random 1-8 kana strings), so real sentences keep the
    reference's result. Kanji-only Japanese (which langid often reads as Mandarin) cannot be told apart
    from Mandarin by script and is left to langid.
    """
    if not isinstance(text, str):
        raise ValueError(f"Text must be a string, not {type(text).__name__}.")
    scripts = {script_of(c) for c in text}
    if "kana" in scripts and not scripts & {"han", "latin"}:
        return "ja"
    return classify(text)[0]


def auto_tag(text: str) -> str:
    """Tag runs of Latin vs CJK script so mixed text needs no hand-written tags (our "auto-mix").

    Rule:
    - Characters are Latin letters (incl. fullwidth), CJK (Han, kana, bopomofo), or neutral (digits,
      spaces, punctuation). A neutral character joins the run before it; neutral characters at the
      start join the first run.
    - A Latin run is English.
    - A CJK run is Japanese if it has kana, or if the text has kana anywhere else (Japanese with embedded
      English: "今日はGoogleで検索"); otherwise (Han only, no kana anywhere) it is Mandarin. Kanji-only
      Japanese cannot be told from Mandarin by script (langid is unreliable on short Han runs both ways),
      so tag such text by hand ("mix") or pass language="ja".
    - Adjacent runs of the same language are merged; each run is wrapped in its tag.
    Text with no letters at all is one run in the language :func:`detect_language` picks.
    """
    runs: list[list] = []  # [kind, text] with kind "latin", "cjk" or None (no letter yet)
    for char in text:
        script = script_of(char)
        kind = "latin" if script == "latin" else ("cjk" if script in ("han", "kana", "bopomofo") else None)
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
            lang = "en"
        elif kind == "cjk":
            lang = "ja" if text_has_kana else "zh"
        else:
            lang = detect_language(text)
        if tagged and tagged[-1][0] == lang:
            tagged[-1][1] += chunk
        else:
            tagged.append([lang, chunk])
    return "".join(f"{TAGS[lang]}{chunk}{TAGS[lang]}" for lang, chunk in tagged)
