"""``vallex make-prompt``: a recording + transcript → a reusable ``.npz`` voice prompt."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-prompt",
        help="turn 1-15 s of speech into a reusable voice prompt (.npz)",
        description="Encode AUDIO (WAV, FLAC, OGG, Opus, MP3; M4A with PyAV) with EnCodec and store it with the "
        "transcript's tokens in the reference .npz format. Give --output FILE, or --name to save it as a "
        "preset in --presets-dir.",
    )
    parser.add_argument("audio", type=Path, help="recording of one speaker, 1-15 s (3-10 s works best)")
    parser.add_argument("--transcript", help="what is said (default: Whisper, when installed with its weights)")
    parser.add_argument("--language", help="language of the transcript: one the checkpoint speaks (the public "
                        "one: en, zh, ja; see --checkpoint) (default: detected among them)")
    parser.add_argument("--checkpoint", type=Path, help="the VALL-E X checkpoint the prompt is for, when it is not "
                        "the weights folder's (e.g. runs/de/checkpoint-00002000.pt): its languages are the choices "
                        "(default: $VALLEX_CHECKPOINT)")
    parser.add_argument("--name", help="preset name: letters, digits, '_' and '-' (up to 64)")
    parser.add_argument("--presets-dir", type=Path, help="preset folder for --name (default: $VALLEX_PRESETS_DIR "
                        "or ~/.local/share/vallex/presets)")
    parser.add_argument("-o", "--output", type=Path, help="write the prompt to this .npz file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing preset of that name")
    parser.add_argument("--trim-silence", action="store_true", help="drop leading and trailing silence")
    parser.add_argument("--weights-dir", type=Path, help="folder with the EnCodec weights (default: "
                        "$VALLEX_WEIGHTS_DIR or the caches)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vallex.cli.options import check_output, checkpoint_languages
    from vallex.prompts import PresetLibrary, make_prompt, validate_name
    from vallex.weights.codec import pretrained_codec

    if args.output is None and args.name is None:
        raise ValueError("Say where to put the prompt: --output FILE.npz or --name NAME (a preset).")
    if args.output is not None and args.output.suffix != ".npz":
        raise ValueError(f"--output must end in .npz, got {args.output.name!r}.")
    if args.output is not None:  # before encoding: a bad output is reported at once
        check_output(args.output, "--output", {"audio": args.audio})
    library = None
    if args.name is not None:
        validate_name(args.name)
        library = PresetLibrary(args.presets_dir) if args.presets_dir else PresetLibrary.default()
        if args.name in library and not args.overwrite and args.output is None:
            raise ValueError(f"A preset named {args.name!r} already exists in {library.directory}; "
                             "use --overwrite or another name.")
    languages = checkpoint_languages(args.weights_dir, args.checkpoint)  # read from its files, not loaded
    codec = pretrained_codec(args.weights_dir, components=("encodec",))  # prompts need no vocoder
    prompt = make_prompt(args.audio, args.transcript, args.language, codec=codec, name=args.name,
                         trim_silence=args.trim_silence, languages=languages)
    written = []
    if args.output is not None:
        written.append(prompt.save_npz(args.output))
    if library is not None:
        written.append(library.save(args.name, prompt, overwrite=args.overwrite))
    print(f"Prompt: {prompt.seconds:.2f} s ({prompt.num_frames} frames), language {prompt.language}, "
          f"{len(prompt.text_ids)} text tokens; transcript: {prompt.transcript}")
    for path in written:
        print(f"Wrote {path}")
    return 0
