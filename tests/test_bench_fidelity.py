"""bench/fidelity.py's streaming measure: it replays the scheduler's streaming, and measures what it says."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import fidelity  # noqa: E402

from vallex.api import VallEX  # noqa: E402
from vallex.inference.generation import language_ids  # noqa: E402

torch.set_num_threads(1)


def test_streamed_codes_are_the_schedulers(tiny_tts):
    """The measure's replay of one sentence gives the codes synthesize_stream gives it (exact chunks, alone), and
    its previous-streaming yardstick the codes of whole passes over each chunk's frames."""
    held = VallEX(tiny_tts.model, tiny_tts.codec, device=tiny_tts.device, frame_limits=lambda text, prompt: (160, 160))
    result = held.synthesize_detailed("A sentence long enough for a few chunks.", language="en", seed=3,
                                      chunk_seconds=0.2)
    (sentence,) = result.sentences
    tokens = sentence.tokens
    ids = torch.tensor([tokens.ids])
    langs = language_ids(len(tokens.ids), 0, tokens.langs[0], list(tokens.langs))[None]
    example = fidelity.Example(ids, langs, torch.zeros(1, 0, 8, dtype=torch.long), sentence.codes)
    streamed = fidelity.streamed_codes(held.model, example, 0.2)
    assert torch.equal(streamed, sentence.codes)
    previous = fidelity.streamed_codes(held.model, example, 0.2, windows=False)
    assert torch.equal(previous[..., 0], sentence.codes[..., 0]) and not torch.equal(previous, streamed)
    assert fidelity.differ([streamed], [streamed]) == [0.0] * 7
    assert max(fidelity.differ([previous], [streamed])) > 0
