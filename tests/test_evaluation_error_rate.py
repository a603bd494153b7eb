"""WER/CER against hand-computed values (alignment counts worked out by hand in the comments)."""
from __future__ import annotations

import math

import pytest

from vallex.evaluation.error_rate import (
    ErrorCounts,
    error_counts,
    error_rate,
    metric_for,
    normalize_text,
    pooled,
    tokens_for_scoring,
)


def test_metric_per_language():
    assert (metric_for("en"), metric_for("zh"), metric_for("ja")) == ("wer", "cer", "cer")
    with pytest.raises(ValueError, match="en, zh, ja"):
        metric_for("fr")


def test_english_normalisation_rules():
    # NFKC (full-width letters), lower case, punctuation/symbols -> space, inner apostrophes kept.
    assert normalize_text("Don\u2019t STOP\u2014the well-known \u201crock'n'roll\u201d band, ＯＫ!", "en") == \
        "don't stop the well known rock'n'roll band ok"
    assert normalize_text("'quoted' words' $5 + 3%", "en") == "quoted words 5 3"


def test_cjk_tokens_are_characters_without_punctuation_or_spaces():
    assert tokens_for_scoring("你好，世界！ ＡＢ", "zh") == ["你", "好", "世", "界", "a", "b"]
    assert tokens_for_scoring("こんにちは、世界。", "ja") == ["こ", "ん", "に", "ち", "は", "世", "界"]


@pytest.mark.parametrize(
    "reference, hypothesis, language, expected",
    [
        # the cat sat on the mat / the cat sit on mat: sat->sit (S), "the" deleted (D): 2 / 6
        ("The cat sat on the mat.", "the cat sit on mat", "en", (1, 1, 0, 6)),
        # hello world / hello big wide world: two insertions: 2 / 2
        ("Hello world", "hello big wide world", "en", (0, 0, 2, 2)),
        # a b c d e f g / x b d e f g h: a->x (S), c (D), h (I): 3 / 7 (any other path costs more)
        ("a b c d e f g", "x b d e f g h", "en", (1, 1, 1, 7)),
        # case, punctuation, hyphen and curly apostrophe are not errors
        ("Well-known, isn't it?", "well known isn\u2019t it", "en", (0, 0, 0, 4)),
        # don't / dont: one substitution out of two words
        ("Don't stop.", "dont stop", "en", (1, 0, 0, 2)),
        # 今天天气很好 / 今天天汽很好啊: 气->汽 (S), 啊 (I): 2 / 6
        ("今天天气很好。", "今天天汽很好啊", "zh", (1, 0, 1, 6)),
        # こんにちは世界 / こんにちわ世界: は->わ (S): 1 / 7
        ("こんにちは、世界。", "こんにちわ世界", "ja", (1, 0, 0, 7)),
        # nothing heard: every reference token is deleted
        ("one two three", "", "en", (0, 3, 0, 3)),
        ("你好", "。", "zh", (0, 2, 0, 2)),
    ],
)
def test_error_counts_match_hand_alignment(reference, hypothesis, language, expected):
    counts = error_counts(reference, hypothesis, language)
    assert (counts.substitutions, counts.deletions, counts.insertions, counts.reference_length) == expected
    s, d, i, n = expected
    assert error_rate(reference, hypothesis, language) == pytest.approx((s + d + i) / n)


def test_pooled_rate_differs_from_mean_of_rates():
    a = error_counts("The cat sat on the mat.", "the cat sit on mat", "en")  # 2 / 6
    b = error_counts("Hello world", "hello big wide world", "en")  # 2 / 2
    total = pooled([a, b])
    assert total == ErrorCounts(1, 1, 2, 8)
    assert total.rate == pytest.approx(4 / 8)
    assert (a.rate + b.rate) / 2 == pytest.approx((2 / 6 + 1.0) / 2)
    assert math.isnan(pooled([]).rate)


def test_reference_without_words_is_refused():
    with pytest.raises(ValueError, match="no words left"):
        error_counts("?!", "anything", "en")
