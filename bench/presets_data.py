"""The reference's 41 voice presets, reduced to what the robustness measurements read.

``bench/data/presets/reference_presets.npz`` holds, for each preset, its codebook-1 EnCodec codes (75 Hz) and
its transcript's text-token ids, with its name and language (where they come from: ``bench/data/presets/README.md``).
``python bench/presets_data.py --extract FOLDER`` rebuilds that file from the presets' ``.npz`` files.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data" / "presets" / "reference_presets.npz"
#: The presets' ``lang_code`` (the reference's numbering; vallex.languages.NPZ_CODE_LANGUAGE).
LANGUAGE_OF_CODE = {0: "zh", 1: "ja", 2: "en"}
#: Presets whose audio is exactly 3 s (225 frames) were cut there while keeping the whole transcript.
CUT_FRAMES = 225


@dataclass(frozen=True)
class Preset:
    name: str
    language: str  # "en", "zh" or "ja"
    codes: np.ndarray  # int64 [T]: codebook-1 tokens, 0..1023, at 75 Hz
    text_tokens: np.ndarray  # int64 [S]: the transcript's text-token ids

    @property
    def cut(self) -> bool:
        """True when the audio stops at 3 s: its frames per text token are a lower bound only."""
        return len(self.codes) == CUT_FRAMES

    @property
    def rate(self) -> float:
        """Codebook-1 frames per text token."""
        return len(self.codes) / len(self.text_tokens)


def load_presets(path: Path = DATA) -> list[Preset]:
    """The presets stored at ``path``, in name order."""
    with np.load(path) as data:
        code_ends = np.cumsum(data["frames"])
        text_ends = np.cumsum(data["text_lengths"])
        codes = np.split(data["codes1"].astype(np.int64), code_ends[:-1])
        texts = np.split(data["text_tokens"].astype(np.int64), text_ends[:-1])
        return [Preset(str(name), str(language), c, t)
                for name, language, c, t in zip(data["names"], data["languages"], codes, texts)]


def extract(folder: Path, path: Path = DATA) -> list[Preset]:
    """Write ``path`` from the reference presets' ``.npz`` files in ``folder`` (``audio_tokens`` [1, T, 8])."""
    presets = []
    for file in sorted(folder.glob("*.npz")):
        with np.load(file) as npz:
            presets.append(Preset(file.stem, LANGUAGE_OF_CODE[int(npz["lang_code"])],
                                  npz["audio_tokens"][0, :, 0].astype(np.int64),
                                  npz["text_tokens"][0].astype(np.int64)))
    if not presets:
        raise SystemExit(f"No .npz presets in {folder}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path, names=np.array([p.name for p in presets]), languages=np.array([p.language for p in presets]),
        frames=np.array([len(p.codes) for p in presets]), text_lengths=np.array([len(p.text_tokens) for p in presets]),
        codes1=np.concatenate([p.codes for p in presets]).astype(np.int16),  # codes are 0..1023
        text_tokens=np.concatenate([p.text_tokens for p in presets]).astype(np.uint8),  # ids are 0..69
    )
    return presets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extract", type=Path, required=True, metavar="FOLDER",
                        help="folder of the reference's preset .npz files")
    parser.add_argument("--output", type=Path, default=DATA)
    args = parser.parse_args()
    presets = extract(args.extract, args.output)
    print(f"{len(presets)} presets, {sum(len(p.codes) for p in presets)} frames -> {args.output} "
          f"({args.output.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
