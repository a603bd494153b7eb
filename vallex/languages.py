"""Language tables.

The checkpoint and the prompt files number languages differently, and mixing them up silently
gives the wrong accent, so both tables live here and nowhere else.
"""
from __future__ import annotations

#: Languages the public checkpoint knows, in the order of its language-embedding rows.
LANGUAGES: tuple[str, ...] = ("en", "zh", "ja")

#: Row of ``ar_language_embedding`` / ``nar_language_embedding`` for each language.
MODEL_LANGUAGE_ID: dict[str, int] = {"en": 0, "zh": 1, "ja": 2}

#: ``lang_code`` stored in reference ``.npz`` prompt files (a different order!).
NPZ_LANGUAGE_CODE: dict[str, int] = {"zh": 0, "ja": 1, "en": 2}
NPZ_CODE_LANGUAGE: dict[int, str] = {code: lang for lang, code in NPZ_LANGUAGE_CODE.items()}

#: Tags used in tagged text (``[EN]hello[EN][ZH]你好[ZH]``).
LANGUAGE_TAG: dict[str, str] = {"en": "[EN]", "zh": "[ZH]", "ja": "[JA]"}

#: Language names accepted besides the codes, lower-cased (the reference UI's dropdown labels). An accent is
#: named by its language, so accents accept the same names.
LANGUAGE_ALIASES: dict[str, str] = {
    "english": "en", "en": "en",
    "中文": "zh", "chinese": "zh", "mandarin": "zh", "zh": "zh",
    "日本語": "ja", "japanese": "ja", "ja": "ja",
}
#: Choices that leave it to the text: no accent override, or (for a prompt) a language to detect.
UNSET_CHOICES: tuple[str, ...] = ("", "no-accent", "none", "auto")


def check_language(language: str) -> str:
    """Return ``language`` if the checkpoint knows it, else raise a ValueError that lists the choices."""
    if not isinstance(language, str) or language not in MODEL_LANGUAGE_ID:
        raise ValueError(
            f"Unknown language {language!r}: expected one of {', '.join(LANGUAGES)}."
        )
    return language


def normalize_language(language: str) -> str:
    """The code of a language given by code or name (``"en"``, ``"English"``, ``"中文"``, ``"日本語"``, any case).

    Anything else, ``"auto"`` included (callers that can detect the language check for it first), is a
    ValueError that lists the choices.
    """
    if not isinstance(language, str):
        raise ValueError(f"Language must be a string such as 'en', 'zh' or 'ja', not {type(language).__name__}.")
    code = LANGUAGE_ALIASES.get(language.strip().lower())
    if code is None:
        raise ValueError(f"Unknown language {language!r}: expected one of {', '.join(LANGUAGES)} "
                         "(or English, 中文, 日本語).")
    return code


def normalize_accent(accent: str | None) -> str | None:
    """Map an accent choice to a language code; ``None``/``"no-accent"`` mean "follow the text"."""
    if accent is None:
        return None
    if not isinstance(accent, str):
        raise ValueError(f"Accent must be a string such as 'en', 'zh' or 'ja', not {type(accent).__name__}.")
    key = accent.strip().lower()
    if key in UNSET_CHOICES:
        return None
    if key not in LANGUAGE_ALIASES:
        raise ValueError(
            f"Unknown accent {accent!r}: expected 'en', 'zh', 'ja' (or 'no-accent')."
        )
    return LANGUAGE_ALIASES[key]
