"""Language tables.

Which languages a model speaks is a property of its checkpoint: :class:`Languages` lists them in the order of the
checkpoint's language-embedding rows (the public checkpoint: en, zh, ja; a checkpoint trained on new data appends
each language prepare-data met, e.g. de). The reference's prompt files number the public three differently, and
mixing the two up silently gives the wrong accent, so every table lives here and nowhere else.
"""
from __future__ import annotations

import re
import reprlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

#: Languages the public checkpoint knows, in the order of its language-embedding rows.
LANGUAGES: tuple[str, ...] = ("en", "zh", "ja")

#: Row of ``ar_language_embedding`` / ``nar_language_embedding`` for each language of the public checkpoint.
MODEL_LANGUAGE_ID: dict[str, int] = {"en": 0, "zh": 1, "ja": 2}

#: ``lang_code`` stored in reference ``.npz`` prompt files (a different order!).
NPZ_LANGUAGE_CODE: dict[str, int] = {"zh": 0, "ja": 1, "en": 2}
NPZ_CODE_LANGUAGE: dict[int, str] = {code: lang for lang, code in NPZ_LANGUAGE_CODE.items()}

#: Tags used in tagged text (``[EN]hello[EN][ZH]你好[ZH]``); another language's tag is its upper-cased code
#: (:func:`language_tag`: ``[DE]``, ``[FR-FR]``).
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

#: A language code: ISO 639 (2-3 letters), optionally with espeak-ng's region or variant parts (``fr-fr``).
LANGUAGE_CODE_PATTERN = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")
#: Languages the checkpoint's own G2P reads (:mod:`vallex.text.cleaners`); any other is phonemised by
#: espeak-ng (:class:`vallex.text.EspeakFrontend`), exactly as ``vallex prepare-data`` phonemised its data.
NATIVE_G2P_LANGUAGES: tuple[str, ...] = LANGUAGES
#: What ``language=`` accepts besides a language: detect it ("auto"), read tags ("mix"), tag scripts ("auto-mix").
TEXT_MODES: tuple[str, ...] = ("auto", "mix", "auto-mix")
#: Languages whose text is written in CJK characters (they split sentences at 。！？ and get CJK runs in auto-mix).
CJK_LANGUAGES: tuple[str, ...] = ("zh", "ja")


def language_code(name: Any) -> str:
    """The code of a language given by code (any case) or by one of :data:`LANGUAGE_ALIASES`; ValueError for
    anything that is not a well-formed code. Says nothing about whether a model speaks it."""
    if not isinstance(name, str):
        raise ValueError(f"Language must be a string such as 'en', 'zh' or 'de', not {type(name).__name__}.")
    key = name.strip().lower()
    code = LANGUAGE_ALIASES.get(key, key)
    if not LANGUAGE_CODE_PATTERN.match(code):
        raise ValueError(f"{name!r} is not a language code: expected e.g. 'en', 'zh', 'ja', 'de' or 'fr-fr'.")
    return code


def language_tag(code: str) -> str:
    """The tag that marks ``code``'s spans in tagged text: ``[EN]`` for "en", ``[FR-FR]`` for "fr-fr"."""
    return LANGUAGE_TAG.get(code) or f"[{code.upper()}]"


class _HasLanguages(Protocol):
    num_languages: int
    languages: tuple[str, ...] | None


@dataclass(frozen=True)
class Languages:
    """The languages one model speaks, in the order of its language-embedding rows (row = position).

    Everything that takes a language asks the loaded model's table: the text front end (which G2P, what
    ``auto`` detects among), the accent (a row like any other), the CLI's, app's and HTTP API's choices.

    Example::

        Languages.public().row("zh")            # 1
        tts.languages.codes                       # ("en", "zh", "ja", "de") for a model trained on German too
    """

    codes: tuple[str, ...]

    def __post_init__(self) -> None:
        codes = tuple(self.codes) if isinstance(self.codes, (list, tuple)) else None
        if not codes or not all(isinstance(c, str) and LANGUAGE_CODE_PATTERN.match(c) for c in codes):
            raise ValueError(f"A model's languages must be a non-empty list of language codes such as "
                             f"['en', 'zh', 'ja', 'de'], got {reprlib.repr(self.codes)}.")  # may be long
        if len(set(codes)) != len(codes):
            raise ValueError(f"A model's languages must not repeat a code, got {reprlib.repr(list(codes))}.")
        object.__setattr__(self, "codes", codes)

    @classmethod
    def public(cls) -> Languages:
        """The public checkpoint's table: en=0, zh=1, ja=2."""
        return _PUBLIC

    @classmethod
    def of(cls, config: _HasLanguages) -> Languages:
        """The table of a :class:`vallex.config.VallexConfig`; ValueError when the configuration does not name
        the languages of its rows (a grown model whose ``languages.json`` was lost)."""
        if config.languages is None:
            raise ValueError(
                f"The model has {config.num_languages} language rows but does not say which languages they are: "
                "put the run's languages.json beside the checkpoint, or add \"languages\": [\"en\", \"zh\", \"ja\", "
                "...] (one code per row) to the checkpoint's .json.")
        return cls(config.languages)

    def __iter__(self) -> Iterator[str]:
        return iter(self.codes)

    def __len__(self) -> int:
        return len(self.codes)

    def __contains__(self, code: object) -> bool:
        return code in self.codes

    def __str__(self) -> str:
        return ", ".join(self.codes)

    @property
    def text_choices(self) -> tuple[str, ...]:
        """What ``language=`` accepts for text: "auto", every language, "mix", "auto-mix"."""
        return ("auto", *self.codes, "mix", "auto-mix")

    @property
    def espeak(self) -> tuple[str, ...]:
        """The languages phonemised by espeak-ng (those the checkpoint's own G2P does not read)."""
        return tuple(c for c in self.codes if c not in NATIVE_G2P_LANGUAGES)

    def row(self, code: str) -> int:
        """The language-embedding row of ``code`` (checked)."""
        return self.codes.index(self.check(code))

    def check(self, language: Any) -> str:
        """``language`` if the model speaks it, else a ValueError naming what it speaks."""
        if not isinstance(language, str) or language not in self.codes:
            raise ValueError(f"Unknown language {language!r}: this model speaks {self}. A language is spoken "
                             "after training on it (vallex/training/README.md, 'Add a language').")
        return language

    def normalize(self, name: Any) -> str:
        """The code of a language given by code or name (``"en"``, ``"English"``, ``"中文"``, ``"DE"``), checked
        against this table. Anything else, ``"auto"`` included (callers that can detect the language check for
        it first), is a ValueError that lists the choices."""
        try:
            code = language_code(name)
        except ValueError:
            code = None
        if code not in self.codes:
            names = " (or English, 中文, 日本語)" if set(LANGUAGES) <= set(self.codes) else ""
            raise ValueError(f"Unknown language {name!r}: expected one of {self}{names}.")
        return code

    def accent(self, choice: Any) -> str | None:
        """The language whose row an accent uses; ``None``/``"none"``/``"no-accent"`` mean "follow the text"."""
        if choice is None:
            return None
        if not isinstance(choice, str):
            raise ValueError(f"Accent must be a string such as {', '.join(map(repr, self.codes[:3]))}, "
                             f"not {type(choice).__name__}.")
        if choice.strip().lower() in UNSET_CHOICES:
            return None
        try:
            return self.normalize(choice)
        except ValueError:
            raise ValueError(f"Unknown accent {choice!r}: expected one of {self} (or 'no-accent').") from None


_PUBLIC = Languages(LANGUAGES)


def check_language(language: str) -> str:
    """Return ``language`` if the public checkpoint knows it, else a ValueError that lists the choices
    (a loaded model's own table: ``VallEX.languages.check``)."""
    return _PUBLIC.check(language)


def normalize_language(language: str) -> str:
    """:meth:`Languages.normalize` of the public checkpoint's table."""
    return _PUBLIC.normalize(language)


def normalize_accent(accent: str | None) -> str | None:
    """:meth:`Languages.accent` of the public checkpoint's table."""
    return _PUBLIC.accent(accent)


def check_codes(codes: Sequence[str], where: str) -> tuple[str, ...]:
    """``codes`` as a tuple if they are a valid language table (see :class:`Languages`), else a ValueError
    naming ``where`` they came from."""
    try:
        return Languages(tuple(codes) if isinstance(codes, (list, tuple)) else codes).codes
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
