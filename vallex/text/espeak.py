"""G2P for languages the checkpoint does not know, over ``phonemizer`` + espeak-ng (for training a new
language, and for speaking it once trained: :func:`vallex.text.tokenize_language`), with the same
``tokenize(text) -> TextTokens`` shape as the main front end.

Its symbol table :data:`ESPEAK_SYMBOLS` starts with the checkpoint's 70 symbols at the same ids, so a
phoneme both tables share keeps the embedding row the checkpoint learnt for it when fine-tuning; the
IPA symbols espeak-ng adds get ids from 70 upward (the checkpoint has 2048 text-embedding rows, rows
70.. are unused). Characters outside the table become ``[UNK]`` (0), as in the main table.
"""
from __future__ import annotations

import functools
import threading
import unicodedata

from .normalize import check_not_blank, has_pronounceable, normalize_text
from .symbols import SPACE_SYMBOL, SYMBOLS, UNK_ID
from .tokens import TextTokens

# IPA symbols espeak-ng emits that bpe_69 lacks. Order is part of the table: append only, never reorder.
_EXTRA = (
    # vowels
    "ɐɒʌɜɞɘɵɤøœɶyʏɨʉᵻɚɝoä"
    # consonants
    "cqrɢɣχʁʀħʕʔɦβʋɱɲɳɴɭʎʟɬɮɽɻʂʐɕʝɟɖʈɓɗʄɠʛɰɺʍʜʢʡ"
    # length, secondary articulation, diacritics (combining characters stay separate symbols)
    "ːˑʲʷˠˤⁿˡʼ˞‿\u0303\u0329\u032f\u032a\u0325\u030a\u0361"
    # tone letters and espeak's tone numbers
    "˥˦˧˨˩0123456789"
    # punctuation espeak keeps
    ";:'\"¿¡«»()"
)

#: Symbol table of the espeak front end: the 70 checkpoint symbols, then espeak's extra IPA symbols.
ESPEAK_SYMBOLS: tuple[str, ...] = SYMBOLS + tuple(dict.fromkeys(c for c in _EXTRA if c not in SYMBOLS))
ESPEAK_SYMBOL_TO_ID: dict[str, int] = {s: i for i, s in enumerate(ESPEAK_SYMBOLS)}

# espeak writes the IPA "script g" (U+0261); the checkpoint's table has the ASCII "g" for the same sound.
_SAME_SOUND = {"\u0261": "g"}

_lock = threading.Lock()  # espeak-ng keeps global state in its C library: one call at a time


@functools.cache
def _backend(language: str):
    """One phonemizer EspeakBackend per language, created on first use (~20 ms) and kept."""
    from phonemizer.backend import EspeakBackend

    return EspeakBackend(language, preserve_punctuation=True, with_stress=True,
                         language_switch="remove-flags")


@functools.lru_cache(maxsize=1)
def supported_languages() -> frozenset[str]:
    """espeak-ng language codes available on this machine (e.g. "de", "fr-fr", "cmn-latn-pinyin")."""
    from phonemizer.backend import EspeakBackend

    return frozenset(EspeakBackend.supported_languages())


class EspeakFrontend:
    """G2P for one espeak-ng language.

    Example::

        tokens = EspeakFrontend("de").tokenize("Guten Tag!")   # ids index ESPEAK_SYMBOLS
    """

    def __init__(self, language: str, max_tokens: int | None = None) -> None:
        if language not in supported_languages():
            raise ValueError(
                f"espeak-ng has no language {language!r}; use a code from "
                "vallex.text.espeak.supported_languages(), e.g. 'de', 'fr-fr', 'es', 'ko'."
            )
        self.language = language
        self.max_tokens = max_tokens
        self.symbols = ESPEAK_SYMBOLS

    def phonemize(self, text: str) -> str:
        """Text -> IPA with stress marks and punctuation, words separated by single spaces."""
        from phonemizer.separator import Separator

        prepared = normalize_text(text.replace("\n", " ").strip(), any_script=True)
        check_not_blank(prepared)
        if not has_pronounceable(prepared):
            raise ValueError(f"Text {text!r} has no letters or digits to pronounce.")
        with _lock:
            out = _backend(self.language).phonemize(
                [prepared], separator=Separator(phone="", word=" ", syllable=""), strip=True)
        phonemes = unicodedata.normalize("NFC", " ".join(out[0].split()))
        # NFC composes "a" + combining tilde etc. where Unicode has a precomposed letter; decompose
        # those we do not list back into base + combining mark so they hit the table.
        return "".join(self._split_unknown(c) for c in phonemes)

    @staticmethod
    def _split_unknown(char: str) -> str:
        char = _SAME_SOUND.get(char, char)
        if char in ESPEAK_SYMBOL_TO_ID or char == " ":
            return char
        return unicodedata.normalize("NFD", char)

    def tokenize(self, text: str) -> TextTokens:
        """Text -> TextTokens whose ids index :data:`ESPEAK_SYMBOLS` (``langs`` all ``self.language``)."""
        phonemes = self.phonemize(text)
        if not phonemes:
            raise ValueError(f"espeak-ng gave no phonemes for {text!r}.")
        ids = espeak_ids(phonemes)
        if self.max_tokens is not None and len(ids) > self.max_tokens:
            raise ValueError(
                f"Text gives {len(ids)} tokens; at most {self.max_tokens} are allowed. Split it into "
                "sentences first."
            )
        return TextTokens(ids=ids, langs=[self.language] * len(ids), phonemes=phonemes,
                          language=self.language, tagged_text=text)


def espeak_ids(phonemes: str) -> list[int]:
    """Ids in :data:`ESPEAK_SYMBOLS` of a phoneme string (a space is ``_``; a character not in the table ``[UNK]``)."""
    return [ESPEAK_SYMBOL_TO_ID.get(SPACE_SYMBOL if c == " " else c, UNK_ID) for c in phonemes]
