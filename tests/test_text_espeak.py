"""The espeak-ng G2P backend for languages the checkpoint does not know."""
from __future__ import annotations

import pytest

from vallex.text import ESPEAK_SYMBOLS, SYMBOLS, EspeakFrontend
from vallex.text.espeak import _backend


def test_symbol_table_extends_the_checkpoint_table() -> None:
    assert ESPEAK_SYMBOLS[: len(SYMBOLS)] == SYMBOLS
    assert len(set(ESPEAK_SYMBOLS)) == len(ESPEAK_SYMBOLS)
    assert len(ESPEAK_SYMBOLS) < 2048  # rows of the checkpoint's text embedding


def test_german() -> None:
    tokens = EspeakFrontend("de").tokenize("Guten Tag, Herr Müller!")
    assert tokens.phonemes.startswith("gˈuːtən tˈɑːk,")  # espeak's script g read as the table's "g"
    assert tokens.phonemes.endswith("!")
    assert len(tokens.ids) == len(tokens.langs) == len(tokens.phonemes)
    assert set(tokens.langs) == {"de"} and tokens.language == "de"
    assert all(0 < i < len(ESPEAK_SYMBOLS) for i in tokens.ids)  # no [UNK] for plain German
    assert tokens.ids[1] == ESPEAK_SYMBOLS.index("ˈ") == SYMBOLS.index("ˈ")  # shared symbols, same ids
    assert ESPEAK_SYMBOLS.index("ː") >= len(SYMBOLS)
    assert tokens.ids[tokens.phonemes.index(" ")] == SYMBOLS.index("_")


def test_other_scripts_are_accepted_here() -> None:
    tokens = EspeakFrontend("ko").tokenize("안녕하세요")
    assert tokens.ids and 0 not in tokens.ids


def test_nasal_vowels_use_combining_tilde() -> None:
    phonemes = EspeakFrontend("fr-fr").phonemize("Bonjour")
    assert "\u0303" in phonemes
    assert 0 not in EspeakFrontend("fr-fr").tokenize("Bonjour").ids


def test_one_backend_per_language() -> None:
    EspeakFrontend("es").tokenize("Hola")
    EspeakFrontend("es").tokenize("Adiós")
    assert _backend("es") is _backend("es")


@pytest.mark.parametrize("text", ["", "   ", "...", "a\x00b"])
def test_bad_input(text: str) -> None:
    with pytest.raises(ValueError):
        EspeakFrontend("de").tokenize(text)


def test_unknown_language_and_length_limit() -> None:
    with pytest.raises(ValueError, match="espeak-ng has no language"):
        EspeakFrontend("klingon")
    with pytest.raises(ValueError, match="at most 5"):
        EspeakFrontend("de", max_tokens=5).tokenize("Guten Tag, Herr Müller!")
