"""Throughput of the text front end: sentences per second per language, on one core.

    .venv/bin/python bench/text_frontend.py [--seconds 3]

"first call" is a fresh interpreter's first ``tokenize`` of that language (imports and lazy loading of
jieba / pyopenjtalk's dictionary / the CMU dictionary included); "warm-up" is one pass over the other
sentences (more lazy loads, e.g. inflect for numbers); "warm" is the steady rate over the sentence list
afterwards. The process is pinned to one CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SENTENCES = {
    "en": [
        "The quick brown fox jumps over the lazy dog.",
        "Dr. Smith paid $3.50 for coffee on March 3rd, 2021.",
        "Speech synthesis has improved dramatically over the last decade.",
        "Please call me back when you get a chance.",
        "It was the best of times, it was the worst of times.",
    ],
    "zh": [
        "今天天气很好，我们去公园散步吧。",
        "我有3个苹果和12.5公斤的大米。",
        "语音合成技术在过去十年里取得了巨大的进步。",
        "请把门关上，谢谢。",
        "北京是中国的首都，上海是最大的城市。",
    ],
    "ja": [
        "今日はとても良い天気ですね。",
        "東京タワーの高さは333メートルです。",
        "音声合成の技術はこの十年で大きく進歩しました。",
        "ちょっと待ってください。",
        "新幹線で大阪へ行きました。",
    ],
    "auto-mix": [
        "我喜欢machine learning和深度学习。",
        "今日はGoogleで検索しました。",
        "这个iPhone的价格是6999元。",
        "東京タワーに行ったのはlast yearでした。",
        "Hello，你好，很高兴认识你。",
    ],
}

_CHILD = """
import os, sys, time, json
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
t0 = time.perf_counter()
from vallex.text import tokenize
language, sentence, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
sentences = json.loads(sys.argv[4])
t1 = time.perf_counter()
tokenize(sentence, language)
first = time.perf_counter() - t1
t2 = time.perf_counter()
for s in sentences:  # other lazy loads (e.g. inflect for numbers, ~2 s) happen here
    tokenize(s, language)
warmup = time.perf_counter() - t2
n, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    for s in sentences:
        tokenize(s, language)
        n += 1
warm = n / (time.perf_counter() - start)
print(json.dumps({"import_s": t1 - t0, "first_call_s": first, "warmup_s": warmup,
                  "warm_sentences_per_s": warm}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="warm measuring time per language")
    args = parser.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    print(f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f} "
          f"({os.cpu_count()} CPUs), pinned to one core")
    print(f"{'language':9} {'import s':>9} {'first call s':>13} {'warm-up s':>10} {'warm sent/s':>12}")
    for language, sentences in SENTENCES.items():
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, language, sentences[0], str(args.seconds), json.dumps(sentences)],
            cwd=REPO, env=env, capture_output=True, text=True, check=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{language:9} {result['import_s']:9.3f} {result['first_call_s']:13.3f} "
              f"{result['warmup_s']:10.3f} {result['warm_sentences_per_s']:12.1f}")


if __name__ == "__main__":
    main()
