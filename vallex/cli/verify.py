"""``vallex verify``: which of these recordings says the text best, in the prompt's voice?"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from vallex.synthesis.verification import AUTO_LANGUAGES, VERIFY_LANGUAGES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="rank recordings by how well they say a text (speech recognition, phonemes, voice)",
        description="Transcribe each CANDIDATE with Whisper, score it by phoneme error rate against TEXT (both "
        "through the VALL-E X phonemizer; espeak-ng for languages beyond en/zh/ja) and, with --prompt-audio, by "
        "speaker similarity to that recording; print a JSON list, best first. phoneme_error_rate is shown from 0 "
        "to 1: a transcript with more errors than TEXT has phonemes shows 1, its own value in "
        "phoneme_error_rate_unclamped; transcripts are cut to 200 characters. English works offline with the "
        "bundled Whisper tiny.en; other languages need a multilingual Whisper on disk ($VALLEX_ASR_MODEL or "
        "--asr-model): without one nothing is scored (not checked, exit code 2).",
    )
    parser.add_argument("candidates", type=Path, nargs="+", metavar="CANDIDATE",
                        help="audio files to score (WAV, FLAC, OGG, MP3)")
    parser.add_argument("--text", required=True, help="what every candidate should say")
    parser.add_argument("--language", default="auto", metavar="{" + ",".join(VERIFY_LANGUAGES) + ",...}",
                        help="the language of TEXT: a language code (en, zh, ja, de, fr, ...) or auto (default: "
                        "detected from it among " + ", ".join(AUTO_LANGUAGES) + ")")
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
    from vallex.synthesis.verification import NoRecognizerError, Verifier, reported_transcript, resolve_language

    language = resolve_language(args.text, args.language)  # bad text or language: one line before any model
    for path in (*args.candidates, *([args.prompt_audio] if args.prompt_audio else [])):
        if not path.is_file():
            raise FileNotFoundError(f"No such audio file: {path}")
    wavs = [load_audio(path) for path in args.candidates]
    prompt = load_audio(args.prompt_audio) if args.prompt_audio else None
    try:
        verification = Verifier(asr_model=args.asr_model, device=args.device).verify(
            wavs, args.text, language=language, prompt=prompt)
    except NoRecognizerError as error:  # a recogniser that does not know the language would score it anyway
        detected = (f" (--text read as {language}: give --language if it is another)"
                    if args.language == "auto" else "")
        raise NoRecognizerError(f"Not checked: {error}{detected}", reason=error.reason) from None
    if verification.recognizer_note:
        print(f"vallex verify: {verification.recognizer_note}", file=sys.stderr)
    entries = []
    for score in verification.scores:
        entry = {"path": str(args.candidates[score.index]), "rank": score.rank,
                 "transcript": reported_transcript(score.transcript),
                 "phoneme_error_rate": _number(min(score.phoneme_error_rate, 1.0))}
        if score.phoneme_error_rate > 1.0:  # insertions: (S + D + I) / N passes 1, e.g. noise heard as words
            entry["phoneme_error_rate_unclamped"] = _number(score.phoneme_error_rate)
        if score.similarity is not None:
            entry["similarity"] = _number(score.similarity)
        entries.append(entry)
    print(json.dumps(entries, ensure_ascii=False, indent=1))
    return 0
