"""Property test: on any unicode string the front end returns valid tokens or raises ValueError."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vallex.text import SYMBOLS, split_sentences, tokenize

# Arbitrary unicode (surrogates and control characters included) mixed with the scripts and marks
# the front end treats specially, so the interesting paths are reached often.
_INTERESTING = st.sampled_from(list(
    "abcXYZ019 .,!?$£%'-…、。！？「」ーあアン漢字你好ㄅ\t\u00a0\u3000\n[]") + ["[EN]", "[ZH]", "[JA]", "[UNK]"])
TEXT = st.lists(st.one_of(st.characters(), _INTERESTING), max_size=30).map("".join)
LANGUAGE = st.sampled_from(["auto", "en", "zh", "ja", "mix", "auto-mix"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXT, language=LANGUAGE)
def test_tokenize_returns_valid_tokens_or_raises_value_error(text: str, language: str) -> None:
    try:
        tokens = tokenize(text, language)
    except ValueError as exc:
        assert str(exc)  # a message for the user, never empty
        return
    assert len(tokens.ids) > 0
    assert len(tokens.ids) == len(tokens.langs) == len(tokens.phonemes)
    assert all(isinstance(i, int) and 0 <= i < len(SYMBOLS) for i in tokens.ids)
    assert set(tokens.langs) <= {"en", "zh", "ja"}
    assert tokens.language in {"en", "zh", "ja", "mix"}


@settings(max_examples=100, deadline=None)
@given(text=TEXT, language=st.sampled_from(["en", "zh", "ja", "auto-mix"]))
def test_split_sentences_keeps_every_word(text: str, language: str) -> None:
    sentences = split_sentences(text, language)
    assert all(s and s == s.strip() for s in sentences)
    # Splitting only removes whitespace.
    assert "".join("".join(sentences).split()) == "".join(text.split())
