"""A tiny synthetic corpus spoken by espeak-ng: for trying the training pipeline end to end (and its tests).

``write_espeak_corpus("corpus", {"en": [...], "zh": [...]})`` writes ``corpus/en/en-000.wav`` +
``corpus/en/en-000.txt`` ..., the folder layout ``vallex prepare-data --folder`` reads.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from vallex.files import write_text_atomic

#: espeak-ng voice for each language code (others are passed through: "de", "fr-fr", ...).
ESPEAK_VOICES = {"en": "en-us", "zh": "cmn", "ja": "ja"}

ENGLISH_SENTENCES = (
    "Hello there.", "Good morning.", "How are you?", "I like green tea.", "The cat sleeps.",
    "It is raining.", "See you soon.", "Thank you very much.", "Open the door.", "Time to go home.",
)
MANDARIN_SENTENCES = (
    "你好。", "谢谢你。", "今天很好。", "我喜欢茶。", "早上好。", "再见。", "天气很冷。", "我们走吧。", "好久不见。", "没关系。",
)


def write_espeak_corpus(folder: str | Path, sentences: dict[str, list[str] | tuple[str, ...]],
                        words_per_minute: int = 175) -> list[Path]:
    """Speak every sentence with espeak-ng into ``folder/<language>/<language>-NNN.wav`` plus its ``.txt``.

    Returns the wav paths. Raises ValueError if espeak-ng is not installed (Debian package ``espeak-ng``).
    """
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise ValueError("espeak-ng is not installed: apt-get install espeak-ng (see the Makefile's system-deps).")
    folder = Path(folder)
    paths = []
    for language, texts in sentences.items():
        (folder / language).mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(texts):
            wav = folder / language / f"{language}-{i:03d}.wav"
            subprocess.run([espeak, "-w", str(wav), "-s", str(words_per_minute), "-v",
                            ESPEAK_VOICES.get(language, language), text], check=True, capture_output=True)
            write_text_atomic(wav.with_suffix(".txt"), text + "\n")
            paths.append(wav)
    return paths
