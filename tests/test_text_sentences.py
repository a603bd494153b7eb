"""Sentence splitting for long text (rule based, no NLTK)."""
from __future__ import annotations

import pytest

from vallex.text import split_sentences, tokenize


@pytest.mark.parametrize("text, expected", [
    ("Dr. Smith went to Washington. He met Mrs. Jones there.",
     ["Dr. Smith went to Washington.", "He met Mrs. Jones there."]),
    ("Wait... what? Really?! No way... It works.", ["Wait... what?", "Really?!", "No way...", "It works."]),
    ("The U.S. government paid $3.50 for it. Then it rained.",
     ["The U.S. government paid $3.50 for it.", "Then it rained."]),
    ("J. K. Rowling wrote it. Prof. Lee agreed. See e.g. the book.",
     ["J. K. Rowling wrote it.", "Prof. Lee agreed.", "See e.g. the book."]),
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ("Line one\nline two. Next one.", ["Line one line two.", "Next one."]),
    ("First paragraph without stop\n\nSecond paragraph.", ["First paragraph without stop", "Second paragraph."]),
    ("No terminator at the end", ["No terminator at the end"]),
    ("Pi is 3.14159. Right!", ["Pi is 3.14159.", "Right!"]),
])
def test_english(text: str, expected: list[str]) -> None:
    assert split_sentences(text, "en") == expected


@pytest.mark.parametrize("text, expected", [
    ("今天天气很好。我们去公园吧！好吗？", ["今天天气很好。", "我们去公园吧！", "好吗？"]),
    ("真的吗?当然!走吧", ["真的吗?", "当然!", "走吧"]),  # ASCII !? split too (the reference did not)
    ("我有12.5公斤。", ["我有12.5公斤。"]),
    ("他说：“你好吗？”我说：“很好！”然后走了。", ["他说：“你好吗？”我说：“很好！”然后走了。"]),
    ("等一下……好了。", ["等一下……", "好了。"]),
])
def test_mandarin(text: str, expected: list[str]) -> None:
    assert split_sentences(text, "zh") == expected


@pytest.mark.parametrize("text, expected", [
    ("こんにちは。元気ですか？はい、元気です！", ["こんにちは。", "元気ですか？", "はい、元気です！"]),
    ("「はい。」と言った。次の文です。", ["「はい。」と言った。", "次の文です。"]),
    ("本当?すごい!", ["本当?", "すごい!"]),
])
def test_japanese(text: str, expected: list[str]) -> None:
    assert split_sentences(text, "ja") == expected


def test_auto_detects_language_on_whole_text() -> None:
    assert split_sentences("真的吗?当然!", "auto") == ["真的吗?", "当然!"]
    assert split_sentences("Hello there. How are you?", "auto") == ["Hello there.", "How are you?"]


def test_mix_keeps_tags_on_every_sentence() -> None:
    text = "[EN]Hello there. How are you?[EN][ZH]我很好。谢谢你[ZH][EN]OK.[EN]"
    sentences = split_sentences(text, "mix")
    assert sentences == ["[EN]Hello there.[EN]", "[EN]How are you?[EN]", "[ZH]我很好。[ZH]",
                         "[ZH]谢谢你[ZH][EN]OK.[EN]"]
    for sentence in sentences:
        assert tokenize(sentence, "mix").ids  # each is valid tagged text


def test_auto_mix_text() -> None:
    assert split_sentences("我喜欢Python. It is great! 你呢？", "auto-mix") == [
        "我喜欢Python.", "It is great!", "你呢？"]


def test_blank_and_bad_arguments() -> None:
    assert split_sentences("  \n ", "en") == []
    with pytest.raises(ValueError, match="Unknown language"):
        split_sentences("Hello.", "de")
    with pytest.raises(ValueError, match="string"):
        split_sentences(None, "en")  # type: ignore[arg-type]
