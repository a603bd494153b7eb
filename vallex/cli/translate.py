"""``vallex translate``: speech in one language → speech in another, in the same voice."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vallex.cli.options import add_device_option, add_sampling_options, add_seed_option, add_threads_option

#: Added to a missing-model message from the library (which names no interface's options).
MODELS_HINT = ("On the command line: --transcript and --translation skip speech recognition and translation; "
               "--asr-model and --mt-model take local model folders.")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "translate",
        help="translate speech into another language in the speaker's own voice",
        description="Speech-to-speech translation: Whisper transcribes AUDIO (and translates it into English), "
        "a text translator translates into Mandarin/Japanese, and VALL-E X speaks the translation with AUDIO "
        "as the voice prompt. With --transcript and --translation no speech/translation model is needed.",
    )
    parser.add_argument("audio", type=Path, metavar="AUDIO", help="the source speech (WAV, FLAC, OGG, MP3; <= 5 min)")
    parser.add_argument("--to", dest="target", required=True, choices=["en", "zh", "ja"], help="target language")
    parser.add_argument("--from", dest="source", default="auto", choices=["auto", "en", "zh", "ja"],
                        help="the spoken language (default: detected by Whisper, or from --transcript)")
    parser.add_argument("--transcript", help="what is said in AUDIO (skips speech recognition; AUDIO <= 15 s)")
    parser.add_argument("--translation", help="the text to speak (skips translation)")
    parser.add_argument("--asr-model", help="Whisper model: a faster-whisper size (tiny ... large-v3), a Hugging "
                        "Face repository, or a local folder (default: $VALLEX_ASR_MODEL or 'medium')")
    parser.add_argument("--mt-model", help="translation model: a Hugging Face repository or local folder "
                        "(default: $VALLEX_MT_MODEL or facebook/nllb-200-distilled-600M)")
    parser.add_argument("--english-via", choices=["whisper", "text"], default="whisper",
                        help="translate into English with Whisper's translate task (default) or the text model")
    add_seed_option(parser)
    add_sampling_options(parser)
    parser.add_argument("--weights-dir", type=Path, help="folder with the VALL-E X weights (default: "
                        "$VALLEX_WEIGHTS_DIR or the Hugging Face cache)")
    add_device_option(parser)
    add_threads_option(parser)
    parser.add_argument("-o", "--output", type=Path, required=True, help="output .wav file (24 kHz)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vallex.audio.files import save_audio
    from vallex.cli.options import check_output, sampling_from_args, seed_from_args, threads_from_args
    from vallex.s2st import ModelUnavailableError, SpeechTranslator

    seed, sampling, threads = seed_from_args(args), sampling_from_args(args), threads_from_args(args)
    if args.output.suffix.lower() != ".wav":
        raise ValueError(f"The output must be a .wav file, got {args.output}.")
    if not args.audio.is_file():
        raise FileNotFoundError(f"No such audio file: {args.audio}")
    check_output(args.output, "--output", {"AUDIO": args.audio})
    s2st = SpeechTranslator.from_pretrained(args.weights_dir, asr_model=args.asr_model, mt_model=args.mt_model,
                                            english_via=args.english_via, device=args.device,
                                            num_threads=threads)
    try:
        result = s2st.translate(
            args.audio, args.target, transcript=args.transcript, translation=args.translation,
            source_language=args.source, seed=seed, sampling=sampling,
        )
    except ModelUnavailableError as error:
        raise ModelUnavailableError(f"{error} {MODELS_HINT}") from None
    save_audio(args.output, result.waveform, result.sample_rate)  # atomic: no partial file on failure
    print(f"Transcript ({result.source_language}, {result.sources.get('transcript')}): {result.transcript}",
          file=sys.stderr)
    print(f"Translation ({result.target_language}, {result.sources.get('translation')}): {result.translation}",
          file=sys.stderr)
    print(f"Wrote {args.output} ({result.duration:.2f} s, {len(result.chunks)} chunk(s)).", file=sys.stderr)
    return 0
