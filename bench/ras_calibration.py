"""Calibrate repetition-aware sampling (window K, threshold t_r) for EnCodec codes at 75 Hz on real speech.

For each candidate (K, t_r) it measures (story and table: bench/README.md):

* on natural speech (the reference's 41 presets, ``bench/data/presets``), per language, the share of frames at
  which the rule would fire if the sampler had drawn exactly the natural token: over all frames, and over
  speech frames only (frames outside pauses, a pause being a run of at least ``PAUSE_FRAMES`` identical
  codebook-1 tokens: a stuck token is exactly what the rule must stop, so pauses longer than the rule's
  count fire by construction);
* on degenerate loops (one token repeated; cycles of period 2, 3 and 5 through distinct tokens), each started
  after every preset's natural codes: the share of loop frames that fire once the loop fills the window
  (must be 1), and the loop frame from which every frame fires (the latency).

It then picks, among the pairs that fire on every steady-state loop frame within ``MAX_LATENCY`` frames, the
one with the lowest speech-frame rate in the worst language (ties: the smaller K), and writes everything as
JSON (default ``bench/results/ras-calibration.json``). Runs in a few seconds on one CPU thread.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from presets_data import load_presets  # noqa: E402

from vallex.inference.ras import RAS_THRESHOLD, RAS_WINDOW, min_repeats, ras_fires  # noqa: E402

WINDOWS = (10, 15, 20, 25, 30, 40, 50, 60, 75, 100, 150)
THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
LOOP_PERIODS = (1, 2, 3, 5)
#: Frames of each loop: long enough for the largest window to fill.
LOOP_FRAMES = 300
#: A run of this many identical codebook-1 tokens (133 ms) is a pause: in these presets every such run is
#: EnCodec's silence token (62), its near-silence token (408) or a held low-energy token.
PAUSE_FRAMES = 10
#: The latest loop frame (1 s) from which the rule must fire on every frame.
MAX_LATENCY = 75
RESULT = Path(__file__).resolve().parent / "results" / "ras-calibration.json"


def pause_mask(codes: np.ndarray, run: int = PAUSE_FRAMES) -> np.ndarray:
    """BoolArray [T]: frames inside a run of at least ``run`` identical tokens."""
    mask = np.zeros(len(codes), dtype=bool)
    start = 0
    for end in range(1, len(codes) + 1):
        if end == len(codes) or codes[end] != codes[start]:
            if end - start >= run:
                mask[start:end] = True
            start = end
    return mask


def fires(codes: np.ndarray, window: int, threshold: float) -> np.ndarray:
    return ras_fires(torch.from_numpy(codes)[None], window, threshold)[0].numpy()


def natural_rates(presets, window: int, threshold: float) -> dict[str, dict[str, float]]:
    """Per language: share of all frames and of speech frames (outside pauses) where the rule fires."""
    result = {}
    for language in sorted({p.language for p in presets}):
        fired_all = fired_speech = frames = speech = 0
        for preset in (p for p in presets if p.language == language):
            fired = fires(preset.codes, window, threshold)
            voiced = ~pause_mask(preset.codes)
            fired_all += int(fired.sum())
            fired_speech += int((fired & voiced).sum())
            frames += len(fired)
            speech += int(voiced.sum())
        result[language] = {"all_frames": fired_all / frames, "speech_frames": fired_speech / speech,
                            "frames": frames, "speech_frame_count": speech}
    return result


def loop_behaviour(presets, window: int, threshold: float, rng_seed: int = 0) -> dict[str, dict[str, float]]:
    """Per loop period: share of steady-state loop frames that fire, and the worst latency in frames."""
    rng = np.random.default_rng(rng_seed)
    result = {}
    for period in LOOP_PERIODS:
        steady_fired = steady_frames = 0
        latency = 0
        for preset in presets:
            cycle = rng.choice(1024, size=period, replace=False)
            loop = np.resize(cycle, LOOP_FRAMES)
            fired = fires(np.concatenate([preset.codes, loop]), window, threshold)[len(preset.codes):]
            steady = fired[window:]
            steady_fired += int(steady.sum())
            steady_frames += len(steady)
            misses = np.flatnonzero(~fired)
            latency = max(latency, int(misses[-1]) + 1 if len(misses) else 0)
        result[f"period_{period}"] = {"steady_state_fire_rate": steady_fired / steady_frames,
                                      "latency_frames": latency}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=RESULT, help=f"where to write the results (default {RESULT})")
    args = parser.parse_args()
    torch.set_num_threads(1)
    presets = load_presets()
    rows = []
    for window in WINDOWS:
        for threshold in THRESHOLDS:
            loops = loop_behaviour(presets, window, threshold)
            natural = natural_rates(presets, window, threshold)
            catches = all(v["steady_state_fire_rate"] == 1.0 and v["latency_frames"] <= MAX_LATENCY
                          for v in loops.values())
            rows.append({"window": window, "threshold": threshold, "min_repeats": min_repeats(window, threshold),
                         "catches_every_loop": catches, "natural": natural, "loops": loops,
                         "worst_speech_rate": max(v["speech_frames"] for v in natural.values()),
                         "worst_all_rate": max(v["all_frames"] for v in natural.values())})
    feasible = [r for r in rows if r["catches_every_loop"]]
    best = min(feasible, key=lambda r: (r["worst_speech_rate"], r["window"]))
    chosen = next(r for r in rows if (r["window"], r["threshold"]) == (RAS_WINDOW, RAS_THRESHOLD))
    print(f"{'K':>4} {'t_r':>5} {'n':>3} loops  " + "  ".join(f"{lang}: all/speech %" for lang in ("en", "ja", "zh")))
    for r in rows:
        if r["worst_speech_rate"] < 0.05 or r is chosen:
            mark = " <- vallex.inference.ras default" if r is chosen else ""
            rates = "  ".join(f"{100 * n['all_frames']:6.2f}/{100 * n['speech_frames']:5.2f}"
                              for n in (r["natural"][lang] for lang in ("en", "ja", "zh")))
            catches = "yes" if r["catches_every_loop"] else "no "
            print(f"{r['window']:>4} {r['threshold']:>5} {r['min_repeats']:>3} {catches:>5}  {rates}{mark}")
    print(f"best by the rule: K={best['window']} t_r={best['threshold']}; vallex.inference.ras uses K={RAS_WINDOW} "
          f"t_r={RAS_THRESHOLD}")
    record = {"presets": len(presets), "frames": sum(len(p.codes) for p in presets), "pause_frames": PAUSE_FRAMES,
              "loop_frames": LOOP_FRAMES, "max_latency": MAX_LATENCY,
              "chosen": {"window": RAS_WINDOW, "threshold": RAS_THRESHOLD, "natural": chosen["natural"],
                         "loops": chosen["loops"]},
              "best_by_rule": {"window": best["window"], "threshold": best["threshold"]}, "candidates": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
