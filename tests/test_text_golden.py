"""Text front end parity with the reference, line by line over ``$VALLEX_GOLDEN_DIR/text.jsonl``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from vallex.text import SYMBOLS, tokenize
from vallex.text.language import classify

pytestmark = pytest.mark.golden_text


def _golden_lines() -> list[dict]:
    from conftest import golden_dir

    path = golden_dir() / "text.jsonl"  # checked present and valid by conftest.pytest_configure
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


LINES = _golden_lines()


def test_golden_file_present(golden: Path) -> None:
    lines = (golden / "text.jsonl").read_text(encoding="utf-8").splitlines()
    assert len([line for line in lines if line.strip()]) == len(LINES) > 0


def _check(result: dict, text: str, language: str) -> None:
    if "error" in result:
        with pytest.raises(ValueError):
            tokenize(text, language)
        return
    tokens = tokenize(text, language)
    assert tokens.phonemes == result["phonemes"]
    assert tokens.ids == result["token_ids"]
    assert tokens.langs == result["langs"]
    assert len(tokens.ids) == len(tokens.langs) == len(tokens.phonemes)
    assert all(0 <= i < len(SYMBOLS) for i in tokens.ids)
    # The tagged text the cleaner saw is the reference's, less the "_" it prefixes (which is dropped).
    assert "_" + tokens.tagged_text == result["tagged_text"]


@pytest.mark.parametrize("line", LINES, ids=[line["id"] for line in LINES])
def test_given_language(line: dict) -> None:
    _check(line, line["text"], line["language"])


@pytest.mark.parametrize("line", LINES, ids=[line["id"] for line in LINES])
def test_auto_language(line: dict) -> None:
    auto = line["auto"]
    _check(auto, line["text"], "auto")
    if "error" not in auto:
        assert tokenize(line["text"], "auto").language == auto["language_used"]


@pytest.mark.parametrize("line", LINES, ids=[line["id"] for line in LINES])
def test_langid_scores(line: dict) -> None:
    # generate_audio classifies the text after removing newlines and stripping spaces.
    processed = line["text"].replace("\n", "").strip(" ")
    lang, score = classify(processed)
    assert lang == line["langid"][0]
    assert score == pytest.approx(line["langid"][1], abs=1e-6)
    raw_lang, raw_score = classify(line["text"])
    assert raw_lang == line["langid_raw"][0]
    assert raw_score == pytest.approx(line["langid_raw"][1], abs=1e-6)
