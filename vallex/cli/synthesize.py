"""``vallex synthesize``: text (+ a voice prompt) to a WAV file."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vallex.cli.options import add_device_option, add_dtype_option
from vallex.inference.verification import DEFAULT_VERIFY_ROUNDS, PASS_PHONEME_ERROR_RATE


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
    parser.add_argument("--seed", type=int, help="random seed (same seed, same audio)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--best-of", type=int, default=1, help="sample N candidates, keep the most likely")
    parser.add_argument("--ras", action="store_true",
                        help="repetition-aware sampling: a token repeated too often in the last second is redrawn "
                        "from the full distribution (needs a nucleus: --top-p, default 0.8 with --ras)")
    parser.add_argument("--length-guards", action="store_true",
                        help="bound each sentence's length by the text (measured speaking rates): no early end, "
                        "no babble to the limit; a sentence that reaches the limit is reported")
    parser.add_argument("--verify", choices=["asr"],
                        help="verified best-of-N: each sentence's --best-of candidates are transcribed by Whisper and "
                        "scored by phoneme error rate (and similarity to the prompt's voice); the best is kept, and "
                        "new candidates are sampled while none passes (slow on a CPU; English uses the bundled "
                        "Whisper tiny.en, Mandarin and Japanese need $VALLEX_ASR_MODEL)")
    parser.add_argument("--verify-rounds", type=int, default=DEFAULT_VERIFY_ROUNDS,
                        help=f"with --verify: rounds of new candidates at most (default {DEFAULT_VERIFY_ROUNDS})")
    parser.add_argument("--verify-threshold", type=float, default=PASS_PHONEME_ERROR_RATE,
                        help="with --verify: the phoneme error rate a candidate must reach (default "
                        f"{PASS_PHONEME_ERROR_RATE})")
    parser.add_argument("--weights-dir", type=Path, help="folder with the weights (default: $VALLEX_WEIGHTS_DIR "
                        "or the Hugging Face cache)")
    parser.add_argument("--presets-dir", type=Path, help="folder of named voice presets")
    add_device_option(parser)
    add_dtype_option(parser)
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output .wav file (24 kHz)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vallex.api import VallEX, select_device
    from vallex.audio.files import save_audio
    from vallex.cli.options import check_language_options, check_output, check_sampling_options, read_text_file
    from vallex.inference.scheduler import check_verification

    # Every option is checked before the model loads (a minute on a slow machine).
    text = read_text_file(args.text_file, "--text-file") if args.text_file is not None else args.text
    if args.prompt_text is not None and args.prompt_audio is None:
        raise ValueError("--prompt-text needs --prompt-audio.")
    if args.output.suffix.lower() != ".wav":
        raise ValueError(f"The output must be a .wav file, got {args.output}.")
    check_output(args.output, "--output", {"--prompt-audio": args.prompt_audio, "--prompt-npz": args.prompt_npz,
                                           "--text-file": args.text_file})
    check_sampling_options(args)
    check_verification(args.verify, args.verify_rounds, args.verify_threshold,
                       names={"verify": "--verify", "verify_rounds": "--verify-rounds",
                              "verify_threshold": "--verify-threshold"})
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}.")
    select_device(args.device)
    check_language_options(args)

    tts = VallEX.from_pretrained(args.weights_dir, device=args.device, dtype=args.dtype,
                                 num_threads=args.threads, presets_dir=args.presets_dir, checkpoint=args.checkpoint)
    if args.prompt_audio is not None:
        prompt = tts.make_prompt(args.prompt_audio, args.prompt_text)
    elif args.prompt_npz is not None:
        prompt = args.prompt_npz
    else:
        prompt = args.preset
    result = tts.synthesize_detailed(
        text, prompt, language=args.language, accent=args.accent, seed=args.seed,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, best_of=args.best_of,
        long_text=args.long_text, progress=not args.quiet, ras=args.ras, length_guards=args.length_guards,
        verify=args.verify, verify_rounds=args.verify_rounds, verify_threshold=args.verify_threshold,
    )
    for index, sentence in enumerate(result.sentences, start=1):
        check = sentence.verification
        if check is not None and check.best.phoneme_error_rate is not None:
            print(f"Sentence {index}: heard {check.best.transcript!r}, phoneme error rate "
                  f"{check.best.phoneme_error_rate:.2f} ({check.verdict}; "
                  f"{len(check.candidates)} candidate(s) in {check.rounds} round(s)).", file=sys.stderr)
    for warning in result.warnings:
        print(f"Warning: {warning}", file=sys.stderr)
    save_audio(args.output, result.waveform, result.sample_rate)  # atomic: no partial file on failure
    print(f"Wrote {args.output} ({result.duration:.2f} s, language {result.language}, "
          f"{len(result.sentences)} sentence(s), RTF {result.timings['rtf']:.2f}).", file=sys.stderr)
    return 0
