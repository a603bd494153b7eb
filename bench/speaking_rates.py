"""Speaking rates of real speech (codebook-1 frames per text token, per language) and the length bounds.

Reads the reference's 41 presets (``bench/data/presets``). A preset whose audio is exactly 3 s (225 frames)
was cut there while its transcript stayed whole, so its rate is only a lower bound: the per-language
statistics (median, fastest, slowest) use the whole presets only, and the cut ones are checked against the
bounds as lower bounds (their measured frames must not exceed ``max_frames``; their true length is unknown,
but at least the measured one). Prints the table, checks that ``vallex.inference.length_guards.SPEAKING_RATE`` is the
measured median and that every preset lies within ``frame_bounds``, and writes JSON (default
``bench/results/speaking-rates.json``). Story: bench/README.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from presets_data import load_presets  # noqa: E402

from vallex.inference.length_guards import SPEAKING_RATE, frame_bounds  # noqa: E402

RESULT = Path(__file__).resolve().parent / "results" / "speaking-rates.json"


def rate_table(presets) -> dict[str, dict]:
    """Per language: counts, median/fastest/slowest rate of whole presets, highest lower bound of cut ones."""
    table = {}
    for language in ("en", "zh", "ja"):
        whole = np.array([p.rate for p in presets if p.language == language and not p.cut])
        cut = [p.rate for p in presets if p.language == language and p.cut]
        median = float(np.median(whole))
        table[language] = {"whole_presets": len(whole), "cut_presets": len(cut), "median": round(median, 2),
                           "fastest": round(float(whole.min()), 2), "slowest": round(float(whole.max()), 2),
                           "fastest_vs_median": round(float(whole.min()) / median, 2),
                           "slowest_vs_median": round(float(whole.max()) / median, 2),
                           "cut_highest_lower_bound": round(max(cut), 2) if cut else None}
    return table


def coverage(presets) -> list[dict]:
    """Each preset's frames against its bounds (a cut preset is checked against the maximum only)."""
    rows = []
    for p in presets:
        low, high = frame_bounds(len(p.text_tokens), p.language)
        frames = len(p.codes)
        inside = frames <= high and (p.cut or frames >= low)
        rows.append({"name": p.name, "language": p.language, "text_tokens": len(p.text_tokens), "frames": frames,
                     "cut": p.cut, "rate": round(p.rate, 2), "min_frames": low, "max_frames": high,
                     "within_bounds": inside})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=RESULT)
    args = parser.parse_args()
    presets = load_presets()
    table = rate_table(presets)
    print("lang  whole cut  median fastest slowest  fastest/med slowest/med  cut: highest lower bound")
    for language, row in table.items():
        print(f"{language:>4} {row['whole_presets']:>6} {row['cut_presets']:>3} {row['median']:>7} {row['fastest']:>7} "
              f"{row['slowest']:>7} {row['fastest_vs_median']:>12} {row['slowest_vs_median']:>11}  "
              f"{row['cut_highest_lower_bound']}")
    mismatched = {k: (v, table[k]["median"]) for k, v in SPEAKING_RATE.items() if v != table[k]["median"]}
    rows = coverage(presets)
    outside = [r["name"] for r in rows if not r["within_bounds"]]
    print(f"SPEAKING_RATE {'matches the measurement' if not mismatched else f'differs: {mismatched}'}; "
          f"presets outside frame_bounds: {outside or 'none'}")
    for r in sorted(rows, key=lambda r: r["frames"] / r["max_frames"], reverse=True)[:3]:
        print(f"  closest to the limit: {r['name']} {r['frames']} of {r['max_frames']} frames")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rates": table, "presets": rows}, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    if mismatched or outside:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
