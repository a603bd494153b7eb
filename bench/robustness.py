"""Does decoding say the text? Length-limit stops, long runs and lengths under each sampling setting.

    .venv/bin/python bench/robustness.py --json bench/results/robustness-cpu.json

The model is the tiny one bench/fidelity.py trains (tests/test_training_e2e.py's recipe: espeak-ng English and
Mandarin, a random codec), whose predictions are peaked like a trained model's; each of its training sentences
is sampled with several seeds (at least ``--samples`` per setting). For each setting:

* ``maxlen``: the share of sentences stopped by their length limit instead of EOS;
* ``long_run``: the share with a run of identical codebook-1 frames longer than the longest run in the
  reference's 41 presets of real speech (bench/data/presets);
* ``off_length``: the share whose length is outside 0.5-2x the sentence's ground truth;
* ``ms_per_sentence``: the time to sample one sentence's codebook 1 (CPU, 1 thread).

Settings: the reference's plain sampling; nucleus sampling (top_p 0.8, the nucleus RAS draws from) without RAS;
RAS; RAS with the length guards (vallex.inference.length_guards). These sample codebook 1 alone (``ar_decode``).

Then the whole pipeline (``VallEX.synthesize_detailed``: AR, NAR, a random Vocos, sentence by sentence, on
``--verify-samples`` sentences): RAS and the guards, and the same with verified best-of-N (``verify="asr"``,
``best_of`` 2, up to 3 rounds), whose ``ms_per_sentence`` include every candidate's NAR, vocoder and
recognition. The codec is random, so its audio is noise to a recogniser: every English candidate fails and
the row measures the worst case of verification's cost (three rounds), not its benefit; Mandarin has no
recogniser here (the bundled Whisper tiny.en hears English only), so its sentences are ranked by
log-probability. The README says how ``vallex eval`` compares the settings on real weights.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from fidelity import train_tiny_model  # noqa: E402
from presets_data import load_presets  # noqa: E402

from vallex.files import write_text_atomic  # noqa: E402
from vallex.inference.ar import MAX_FRAMES_PER_TEXT_TOKEN, ar_decode  # noqa: E402
from vallex.inference.cpu_features import cpu_features  # noqa: E402
from vallex.inference.length_guards import frame_bounds_of_tokens  # noqa: E402
from vallex.languages import MODEL_LANGUAGE_ID  # noqa: E402
from vallex.weights.checkpoint import load_model  # noqa: E402

LANGUAGE_OF_ID = {i: name for name, i in MODEL_LANGUAGE_ID.items()}
SETTINGS = {
    "reference": dict(),
    "nucleus 0.8": dict(top_p=0.8),
    "ras": dict(top_p=0.8, ras=True),
    "ras + guards": dict(top_p=0.8, ras=True, guards=True),
}


def longest_run(values: list[int]) -> int:
    best = current = 1 if values else 0
    for a, b in zip(values, values[1:]):
        current = current + 1 if a == b else 1
        best = max(best, current)
    return best


def print_row(row: dict) -> None:
    print(f"{row['setting']:28s} maxlen {row['maxlen']:.1%}  long run {row['long_run']:.1%}  "
          f"off length {row['off_length']:.1%}  {row['ms_per_sentence']} ms/sentence", flush=True)


def pipeline_rows(model: torch.nn.Module, examples: list, real_run: int, samples: int, work: Path) -> list[dict]:
    """RAS + guards through ``synthesize_detailed``, without and with ``verify="asr"`` (best of 2)."""
    from vallex.api import VallEX
    from vallex.training.espeak_corpus import ENGLISH_SENTENCES, MANDARIN_SENTENCES
    from vallex.weights import pretrained_codec
    from vallex.weights.random_weights import make_random_weights

    codec_dir = work / "codec"
    if not codec_dir.is_dir():
        make_random_weights(codec_dir, "tiny")
    tts = VallEX(model, pretrained_codec(codec_dir), None, torch.device("cpu"))
    truth = {tuple(ex.text[0].tolist()): ex.target.shape[1] for ex in examples}
    texts = [(t, "en") for t in ENGLISH_SENTENCES] + [(t, "zh") for t in MANDARIN_SENTENCES]
    plan = [(texts[i % len(texts)], i // len(texts)) for i in range(samples)]
    rows = []
    for name, extra in (("ras + guards (pipeline)", {}), ("ras + guards + verify, best of 2", {
            "verify": "asr", "best_of": 2})):
        counts = {"maxlen": 0, "long_run": 0, "off_length": 0}
        times, rounds, passed, checked = [], [], 0, 0
        for (text, language), seed in plan:
            start = time.perf_counter()
            result = tts.synthesize_detailed(text, language=language, seed=seed, top_p=0.8, ras=True,
                                             length_guards=True, **extra)
            times.append(time.perf_counter() - start)
            sentence = result.sentences[0]
            frames = sentence.codes.shape[1]
            counts["maxlen"] += sentence.stop_reason == "maxlen"
            counts["long_run"] += longest_run(sentence.codes[0, :, 0].tolist()) > real_run
            target = truth.get(tuple(sentence.tokens.ids))
            counts["off_length"] += target is not None and not 0.5 * target <= frames <= 2 * target
            check = sentence.verification
            if check is not None:
                rounds.append(check.rounds)
                checked += check.best.phoneme_error_rate is not None
                passed += check.passed
        row = {"setting": name, "sentences": len(plan), **{k: round(v / len(plan), 4) for k, v in counts.items()},
               "ms_per_sentence": round(1000 * statistics.median(times), 1)}
        if rounds:
            row.update(mean_rounds=round(statistics.mean(rounds), 2), checked=checked, passed=passed)
        rows.append(row)
        print_row(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=100, help="sentences sampled per setting, at least")
    parser.add_argument("--work-dir", type=Path, help="keep the trained tiny model here (default: temporary)")
    parser.add_argument("--verify-samples", type=int, default=20,
                        help="sentences through the whole pipeline per setting, with and without verification")
    parser.add_argument("--json", type=Path, help="write the table here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="vallex-robustness-"))
    checkpoint, examples = train_tiny_model(work)
    model = load_model(checkpoint).eval()
    real_run = max(longest_run(p.codes.tolist()) for p in load_presets())
    seeds = -(-args.samples // len(examples))
    print(f"{len(examples)} sentences x {seeds} seeds per setting; longest run in real speech: {real_run} frames")
    rows = []
    for name, setting in SETTINGS.items():
        options = {k: v for k, v in setting.items() if k != "guards"}
        counts = {"maxlen": 0, "long_run": 0, "off_length": 0}
        times, total = [], 0
        for ex in examples:
            truth = ex.target.shape[1]
            min_frames, max_frames = 1, MAX_FRAMES_PER_TEXT_TOKEN * ex.text.shape[1]
            if setting.get("guards"):
                bounds = frame_bounds_of_tokens([LANGUAGE_OF_ID[int(i)] for i in ex.langs[0]])
                min_frames, max_frames = bounds.min_frames, min(max_frames, bounds.max_frames)
            for seed in range(seeds):
                start = time.perf_counter()
                ar = ar_decode(model, ex.text, ex.langs, ex.prompt[..., 0], min_frames=min_frames,
                               max_frames=max_frames, generator=torch.Generator().manual_seed(seed), **options)
                times.append(time.perf_counter() - start)
                frames = ar.codes.shape[1]
                counts["maxlen"] += ar.stop_reason == "maxlen"
                counts["long_run"] += longest_run(ar.codes[0].tolist()) > real_run
                counts["off_length"] += not 0.5 * truth <= frames <= 2 * truth
                total += 1
        row = {"setting": name, "sentences": total, **{k: round(v / total, 4) for k, v in counts.items()},
               "ms_per_sentence": round(1000 * statistics.median(times), 1)}
        rows.append(row)
        print_row(row)
    if args.verify_samples > 0:
        rows += pipeline_rows(model, examples, real_run, args.verify_samples, work)
    if args.json:
        write_text_atomic(args.json, json.dumps({"rows": rows, "real_speech_longest_run": real_run,
                                                 "seeds_per_sentence": seeds, "sentences": len(examples),
                                                 "cpu": cpu_features().as_dict()}, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
