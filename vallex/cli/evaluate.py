"""``vallex eval``: synthesise an evaluation list and report speaker similarity, WER/CER, duration and RTF."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vallex.cli.options import add_device_option, add_sampling_options, add_seed_option, add_threads_option
from vallex.languages import LANGUAGES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate on a list: speaker similarity, WER/CER, duration, RTF",
        description="Synthesise every line of LIST (JSONL: prompt_audio, prompt_text, text, language, "
        "optional id, prompt_language, reference_audio; or a Seed-TTS-eval meta.lst with --language) and "
        "write results.csv, results.json and report.md to --out. Metric definitions: "
        "vallex/evaluation/README.md.",
    )
    parser.add_argument("eval_list", metavar="LIST", type=Path,
                        help="evaluation list (.jsonl, or Seed-TTS-eval .lst)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--language", choices=LANGUAGES, help="language of a .lst list's texts")
    parser.add_argument("--synthesized-dir", type=Path,
                        help="score already-synthesised <id>.wav files from this folder instead of synthesising")
    parser.add_argument("--weights-dir", type=Path, help="folder with the weights (default: $VALLEX_WEIGHTS_DIR "
                        "or the Hugging Face cache)")
    add_device_option(parser)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "int8"], help="inference precision")
    add_threads_option(parser)
    add_seed_option(parser, default=0)  # every line synthesised with it: a line's audio depends on nothing else
    parser.add_argument("--asr", choices=["auto", "none", "faster-whisper", "openai-whisper"], default="auto",
                        help="speech recogniser for WER/CER (default auto: whichever has its weights)")
    parser.add_argument("--asr-model", help="Whisper model: size name, repository or local folder "
                        "(default $VALLEX_ASR_MODEL or large-v3)")
    parser.add_argument("--wavlm", default="auto", help="WavLM x-vector verifier: 'auto' (microsoft/"
                        "wavlm-base-plus-sv if cached), a local folder, or 'none' (default auto)")
    add_sampling_options(parser)  # the same for every line
    parser.add_argument("--quiet", action="store_true", help="no per-line progress")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vallex.asr import whisper_device
    from vallex.cli.options import option_name, sampling_from_args, seed_from_args, threads_from_args
    from vallex.evaluation import build_setup, read_eval_list, run_evaluation
    from vallex.inference.sampling_settings import Sampling

    items = read_eval_list(args.eval_list, args.language)  # validates before any model is loaded
    seed, threads = seed_from_args(args), threads_from_args(args)
    decoding = sampling_from_args(args).changed()
    if decoding and args.synthesized_dir is not None:
        flags = ", ".join(option_name(s) for s in Sampling.settings() if s.name in decoding)
        raise ValueError(f"Decoding options ({flags}) need synthesis: leave out --synthesized-dir.")
    if args.synthesized_dir is not None:
        if not args.synthesized_dir.is_dir():
            raise ValueError(f"--synthesized-dir {args.synthesized_dir} is not a folder.")
        if args.weights_dir is not None:
            raise ValueError("--weights-dir is not used with --synthesized-dir (nothing is synthesised).")
    device = args.device
    info: dict = {"eval_list": str(args.eval_list)}
    tts = None
    if args.synthesized_dir is None:
        from vallex.api import VallEX
        from vallex.weights.manager import resolve_weights

        tts = VallEX.from_pretrained(args.weights_dir, device=device, dtype=args.dtype, num_threads=threads)
        device = str(tts.device)
        paths = resolve_weights(args.weights_dir, download=False)
        info["model"] = f"VALL-E X ({paths.vallex}), {device}, {args.dtype or 'float32'}"
        info["decoding"] = ", ".join(f"{k}={v}" for k, v in decoding.items()) or "the reference's plain sampling"
        info["weights"] = "RANDOM (make-random-weights): scores are meaningless" if paths.random else "published"
    else:
        info["model"] = f"audio given in {args.synthesized_dir}"
    setup = build_setup(asr=args.asr, asr_model=args.asr_model,
                        wavlm=None if args.wavlm.lower() == "none" else args.wavlm,
                        device=whisper_device(device or "cpu"), seed=seed,
                        decoding=decoding)

    def progress(index: int, total: int, item_id: str) -> None:
        if not args.quiet and index < total:
            print(f"[{index + 1}/{total}] {item_id}", file=sys.stderr)

    rows, files = run_evaluation(items, args.out, setup, tts=tts, synthesized_dir=args.synthesized_dir,
                                 info=info, progress=progress)
    print((args.out / "report.md").read_text(encoding="utf-8"))
    for path in files.values():
        print(f"Wrote {path}", file=sys.stderr)
    return 0
