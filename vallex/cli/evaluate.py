"""``vallex eval``: synthesise an evaluation list and report speaker similarity, WER/CER, duration and RTF."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vallex.cli.options import add_device_option
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
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--seed", type=int, default=0, help="seed of every line's synthesis (default 0)")
    parser.add_argument("--asr", choices=["auto", "none", "faster-whisper", "openai-whisper"], default="auto",
                        help="speech recogniser for WER/CER (default auto: whichever has its weights)")
    parser.add_argument("--asr-model", help="Whisper model: size name, repository or local folder "
                        "(default $VALLEX_ASR_MODEL or large-v3)")
    parser.add_argument("--wavlm", default="auto", help="WavLM x-vector verifier: 'auto' (microsoft/"
                        "wavlm-base-plus-sv if cached), a local folder, or 'none' (default auto)")
    parser.add_argument("--top-p", type=float, help="nucleus sampling for every line (default: off)")
    parser.add_argument("--ras", action="store_true", help="repetition-aware sampling for every line")
    parser.add_argument("--length-guards", action="store_true", help="length guards for every line")
    parser.add_argument("--best-of", type=int, default=1, help="candidates per sentence (default 1)")
    parser.add_argument("--verify", choices=["asr"], help="verified best-of-N for every line (see synthesize)")
    parser.add_argument("--quiet", action="store_true", help="no per-line progress")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vallex.asr import whisper_device
    from vallex.evaluation import build_setup, read_eval_list, run_evaluation

    items = read_eval_list(args.eval_list, args.language)  # validates before any model is loaded
    given = {"top_p": args.top_p, "ras": args.ras, "length_guards": args.length_guards, "best_of": args.best_of,
             "verify": args.verify}
    defaults = {"top_p": None, "ras": False, "length_guards": False, "best_of": 1, "verify": None}
    decoding = {name: value for name, value in given.items() if value != defaults[name]}
    if decoding and args.synthesized_dir is not None:
        raise ValueError("Decoding options (--top-p, --ras, --length-guards, --best-of, --verify) need synthesis: "
                         "leave out --synthesized-dir.")
    from vallex.api import check_sampling
    from vallex.inference.scheduler import check_verification

    check_sampling(top_p=args.top_p, best_of=args.best_of, seed=args.seed,
                   names={"top_p": "--top-p", "best_of": "--best-of", "seed": "--seed"})
    check_verification(args.verify)
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

        tts = VallEX.from_pretrained(args.weights_dir, device=device, dtype=args.dtype, num_threads=args.threads)
        device = str(tts.device)
        paths = resolve_weights(args.weights_dir, download=False)
        info["model"] = f"VALL-E X ({paths.vallex}), {device}, {args.dtype or 'float32'}"
        info["decoding"] = ", ".join(f"{k}={v}" for k, v in decoding.items()) or "the reference's plain sampling"
        info["weights"] = "RANDOM (make-random-weights): scores are meaningless" if paths.random else "published"
    else:
        info["model"] = f"audio given in {args.synthesized_dir}"
    setup = build_setup(asr=args.asr, asr_model=args.asr_model,
                        wavlm=None if args.wavlm.lower() == "none" else args.wavlm,
                        device=whisper_device(device or "cpu"), seed=args.seed,
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
