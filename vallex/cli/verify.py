"""``vallex verify``: which of these recordings says the text best, in the prompt's voice?"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from vallex.synthesis.verification import VERIFY_LANGUAGES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="rank recordings by how well they say a text (speech recognition, phonemes, voice)",
        description="Transcribe each CANDIDATE with Whisper, score it by phoneme error rate against TEXT (both "
        "through the VALL-E X phonemizer) and, with --prompt-audio, by speaker similarity to that recording; "
        "print a JSON list, best first. English works offline with the bundled Whisper tiny.en; Mandarin and "
        "Japanese need a multilingual Whisper on disk ($VALLEX_ASR_MODEL or --asr-model).",
    )
    parser.add_argument("candidates", type=Path, nargs="+", metavar="CANDIDATE",
                        help="audio files to score (WAV, FLAC, OGG, MP3)")
    parser.add_argument("--text", required=True, help="what every candidate should say")
    parser.add_argument("--language", default="auto", choices=list(VERIFY_LANGUAGES),
                        help="the language of TEXT (default: detected from it)")
    parser.add_argument("--prompt-audio", type=Path, metavar="P",
                        help="a recording of the voice the candidates should have (adds 'similarity')")
    parser.add_argument("--asr-model", help="Whisper model: a faster-whisper size, a Hugging Face repository or "
                        "a local folder (default: $VALLEX_ASR_MODEL, else 'medium' if on disk, else the bundled "
                        "tiny.en)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.set_defaults(func=run)


def _number(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def run(args: argparse.Namespace) -> int:
    from vallex.audio.loading import load_audio
    from vallex.synthesis.verification import Verifier, resolve_language

    language = resolve_language(args.text, args.language)  # bad text or language: one line before any model
    for path in (*args.candidates, *([args.prompt_audio] if args.prompt_audio else [])):
        if not path.is_file():
            raise FileNotFoundError(f"No such audio file: {path}")
    wavs = [load_audio(path) for path in args.candidates]
    prompt = load_audio(args.prompt_audio) if args.prompt_audio else None
    verification = Verifier(asr_model=args.asr_model, device=args.device).verify(
        wavs, args.text, language=language, prompt=prompt)
    if verification.recognizer_note:
        print(f"vallex verify: {verification.recognizer_note}", file=sys.stderr)
    entries = []
    for score in verification.scores:
        entry = {"path": str(args.candidates[score.index]), "rank": score.rank, "transcript": score.transcript,
                 "phoneme_error_rate": _number(score.phoneme_error_rate)}
        if score.similarity is not None:
            entry["similarity"] = _number(score.similarity)
        entries.append(entry)
    print(json.dumps(entries, ensure_ascii=False, indent=1))
    return 0
