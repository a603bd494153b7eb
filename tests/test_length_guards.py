"""Length guards: the bounds cover every real preset's length, and the stop reasons say what happened."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from presets_data import load_presets  # noqa: E402
from speaking_rates import rate_table  # noqa: E402

from vallex.inference.length_guards import (  # noqa: E402
    SPEAKING_RATE,
    FrameBounds,
    StopReason,
    frame_bounds,
    frame_bounds_of_tokens,
    length_warning,
)


@pytest.fixture(scope="module")
def presets():
    return load_presets()


def test_speaking_rates_are_the_measured_medians(presets):
    table = rate_table(presets)
    assert SPEAKING_RATE == {language: row["median"] for language, row in table.items()}
    assert table["en"]["cut_presets"] == 16 and sum(row["whole_presets"] for row in table.values()) == 25


def test_bounds_cover_every_preset(presets):
    for preset in presets:
        low, high = frame_bounds(len(preset.text_tokens), preset.language)
        frames = len(preset.codes)
        # A cut preset's true length is at least its measured one: measured >= min proves true >= min; for the
        # maximum only the measured part can be checked.
        assert low <= frames <= high, (preset.name, low, frames, high)
        if not preset.cut:
            assert frames <= 0.7 * high, (preset.name, frames, high)  # room left for slower speakers


def test_bounds_follow_the_text():
    assert frame_bounds(10, "en") == FrameBounds(34, 215)  # 0.5 x 69.6 and 75 + 2 x 69.6
    assert frame_bounds(10, "zh").max_frames < frame_bounds(10, "ja").max_frames < frame_bounds(10, "en").max_frames
    assert frame_bounds_of_tokens(["en"] * 4 + ["zh"] * 6) == FrameBounds(26, 180)  # 52.2 median-rate frames
    assert frame_bounds(1, "ja").min_frames == 2
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="positive whole number"):
            frame_bounds(bad, "en")
    with pytest.raises(ValueError, match="Unknown language 'fr'"):
        frame_bounds(5, "fr")
    with pytest.raises(ValueError, match="at least one text token"):
        frame_bounds_of_tokens([])


def test_stop_reasons():
    assert StopReason.parse("eos") is StopReason.EOS and StopReason.parse("maxlen") is StopReason.MAX_LENGTH
    assert StopReason.parse(StopReason.MAX_LENGTH) is StopReason.MAX_LENGTH and StopReason.MAX_LENGTH == "max_length"
    with pytest.raises(ValueError, match="Unknown stop reason 'tired': expected one of eos, max_length"):
        StopReason.parse("tired")
    assert length_warning("eos", 100) is None
    assert length_warning(StopReason.MAX_LENGTH, 150) == (
        "The sentence reached its length limit (150 frames, 2.0 s) without ending: it is probably babble or "
        "repeats itself; try another seed.")
