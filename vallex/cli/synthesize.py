"""``vallex synthesize``: text (+ a voice prompt) to a WAV file."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vallex.cli.options import (
    add_device_option,
    add_dtype_option,
    add_sampling_options,
    add_seed_option,
    add_threads_option,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synthesize",
        help="speak text in a voice (zero-shot, cross-lingual)",
        description="Synthesise speech for TEXT, optionally in the voice of a prompt "
        "(audio + transcript, a preset name, or an .npz prompt file).",
    )
    text = parser.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", help="the text to speak (English, Mandarin, Japanese, or a language the checkpoint "
                      "was trained on)")
    text.add_argument("--text-file", type=Path, help="read the text from this UTF-8 file")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt-audio", type=Path, help="3-10 s recording of the voice to clone")
    prompt.add_argument("--preset", help="name of a voice preset")
    prompt.add_argument("--prompt-npz", type=Path, help="a prompt file made by `vallex make-prompt`")
    parser.add_argument("--prompt-text", help="transcript of --prompt-audio (Whisper is used when omitted)")
    parser.add_argument("--language", default="auto",
                        help="language of the text: a language the checkpoint speaks (the public one: en, zh, ja; "
                        "a checkpoint trained on more adds them, e.g. de), 'auto' (detected among them), 'mix' "
                        "(reads [EN]..[EN][ZH]..[ZH] tags) or 'auto-mix' (tags Latin/CJK runs by itself); "
                        "default: auto")
    parser.add_argument("--accent", help="speak with this language's accent (one the checkpoint speaks)")
    parser.add_argument("--checkpoint", type=Path, help="a VALL-E X checkpoint to use instead of the weights "
                        "folder's, e.g. runs/de/checkpoint-00002000.pt from `vallex train` (its .json and the run's "
                        "languages.json come with it; default: $VALLEX_CHECKPOINT)")
    parser.add_argument("--long-text", choices=["fixed-prompt", "sliding-window"],
                        help="split long text into sentences and speak them one by one")
    add_seed_option(parser)
    add_sampling_options(parser)
    parser.add_argument("--weights-dir", type=Path, help="folder with the weights (default: $VALLEX_WEIGHTS_DIR "
                        "or the Hugging Face cache)")
    parser.add_argument("--presets-dir", type=Path, help="folder of named voice presets")
    add_device_option(parser)
    add_dtype_option(parser)
    add_threads_option(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output .wav file (24 kHz)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vallex.api import VallEX, select_device
    from vallex.audio.files import save_audio
    from vallex.cli.options import (
        check_language_options,
        check_output,
        read_text_file,
        sampling_from_args,
        seed_from_args,
        threads_from_args,
    )
    from vallex.synthesis.verification import reported_transcript, shown_error_rate

    # Every option is checked before the model loads (a minute on a slow machine).
    text = read_text_file(args.text_file, "--text-file") if args.text_file is not None else args.text
    if args.prompt_text is not None and args.prompt_audio is None:
        raise ValueError("--prompt-text needs --prompt-audio.")
    if args.output.suffix.lower() != ".wav":
        raise ValueError(f"The output must be a .wav file, got {args.output}.")
    check_output(args.output, "--output", {"--prompt-audio": args.prompt_audio, "--prompt-npz": args.prompt_npz,
                                           "--text-file": args.text_file})
    seed, sampling = seed_from_args(args), sampling_from_args(args)
    threads = threads_from_args(args)
    select_device(args.device)
    check_language_options(args)

    tts = VallEX.from_pretrained(args.weights_dir, device=args.device, dtype=args.dtype,
                                 num_threads=threads, presets_dir=args.presets_dir, checkpoint=args.checkpoint)
    if args.prompt_audio is not None:
        prompt = tts.make_prompt(args.prompt_audio, args.prompt_text)
    elif args.prompt_npz is not None:
        prompt = args.prompt_npz
    else:
        prompt = args.preset
    result = tts.synthesize_detailed(text, prompt, language=args.language, accent=args.accent, seed=seed,
                                     long_text=args.long_text, progress=not args.quiet, sampling=sampling)
    for index, sentence in enumerate(result.sentences, start=1):
        check = sentence.verification
        if check is not None and check.best.phoneme_error_rate is not None:
            best = check.best
            heard = f"heard {reported_transcript(best.transcript)!r}" if best.transcript else "heard nothing"
            print(f"Sentence {index}: {heard}, phoneme error rate {shown_error_rate(best.phoneme_error_rate)} "
                  f"({check.verdict}; {len(check.candidates)} candidate(s) in {check.rounds} round(s)).",
                  file=sys.stderr)
    for warning in result.warnings:
        print(f"Warning: {warning}", file=sys.stderr)
    save_audio(args.output, result.waveform, result.sample_rate)  # atomic: no partial file on failure
    print(f"Wrote {args.output} ({result.duration:.2f} s, language {result.language}, "
          f"{len(result.sentences)} sentence(s), RTF {result.timings['rtf']:.2f}).", file=sys.stderr)
    return 0
