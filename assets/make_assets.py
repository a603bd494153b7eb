"""Regenerate the example voices in this folder with espeak-ng (no third-party recordings).

    python assets/make_assets.py          # needs the Debian package espeak-ng

Each voice is a 3-6 s mono OGG/Vorbis clip at 24 kHz and a line in ``voices.json`` (name, language,
transcript, espeak-ng voice). The transcript is exactly what espeak-ng was asked to say, so the clips are
valid voice prompts. Japanese is written in kana because espeak-ng's ``ja`` voice reads only kana.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from vallex.audio.codec_format import SAMPLE_RATE  # noqa: E402

#: (name, language, espeak-ng voice, words per minute, transcript)
VOICES = [
    ("en_ada", "en", "en-us+f3", 150, "Hello, my name is Ada. I am reading this sentence as a voice prompt."),
    ("en_ben", "en", "en-gb+m3", 140, "The quick brown fox jumps over the lazy dog near the river bank."),
    ("zh_lin", "zh", "cmn+m2", 160, "你好，我是小林。今天天气很好，我们去散步吧。"),
    ("zh_mei", "zh", "cmn+f2", 160, "欢迎收听今天的新闻，我是主持人小美。"),
    ("ja_yuki", "ja", "ja+f4", 150, "こんにちは、わたしはゆきです。きょうは、いいてんきですね。"),
    ("ja_taro", "ja", "ja+m1", 150, "はじめまして、たろうです。どうぞよろしくおねがいします。"),
]


def speak(voice: str, speed: int, text: str) -> np.ndarray:
    """espeak-ng's speech for ``text``: float32 [N] at 24 kHz, silence trimmed, peak 0.9."""
    wav_bytes = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
                               check=True, capture_output=True).stdout
    data, rate = sf.read(io.BytesIO(wav_bytes), dtype="float32")
    data = data if data.ndim == 1 else data.mean(axis=1)
    # espeak-ng speaks at 22.05 kHz; linear interpolation is plenty for a prompt clip.
    n = int(round(len(data) * SAMPLE_RATE / rate))
    data = np.interp(np.arange(n) * rate / SAMPLE_RATE, np.arange(len(data)), data).astype(np.float32)
    voiced = np.flatnonzero(np.abs(data) > 0.01)
    data = data[max(voiced[0] - 2400, 0): voiced[-1] + 2400]
    return (0.9 * data / np.max(np.abs(data))).astype(np.float32)


def main() -> None:
    voices = []  # voices.json: the example voices the app offers
    for name, language, voice, speed, transcript in VOICES:
        wav = speak(voice, speed, transcript)
        path = HERE / f"{name}.ogg"
        sf.write(path, wav, SAMPLE_RATE, format="OGG", subtype="VORBIS")
        voices.append({"name": name, "language": language, "file": path.name, "transcript": transcript,
                         "made_with": f"espeak-ng -v {voice} -s {speed}",
                         "seconds": round(len(wav) / SAMPLE_RATE, 2)})
        print(f"{path.name}: {len(wav) / SAMPLE_RATE:.1f} s, {path.stat().st_size // 1024} kB")
    (HERE / "voices.json").write_text(json.dumps(voices, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
