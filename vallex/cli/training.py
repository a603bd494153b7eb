"""``vallex prepare-data`` and ``vallex train``: see vallex/training/README.md for the walkthrough."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    prep = subparsers.add_parser(
        "prepare-data",
        help="turn recordings + transcripts into a training set (EnCodec codes + phoneme ids)",
        description="Recordings (a folder with same-name .txt transcripts, or a CSV/JSONL recording list with "
                    "path,text,language[,speaker]) -> a sharded training folder. Re-running skips finished items.",
    )
    source = prep.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", type=Path, help="audio files with same-name .txt transcripts "
                        "(language: a first sub-folder named en/, zh/, de/..., a 'de|' transcript prefix, "
                        "or --language)")
    source.add_argument("--list", dest="recording_list", type=Path,
                        help="recording list: CSV (header path,text,language[,speaker][,id]) or JSONL")
    source.add_argument("--manifest", dest="recording_list", type=Path, help=argparse.SUPPRESS)  # its old name
    prep.add_argument("--out", type=Path, required=True, help="output folder (created; re-use it to resume)")
    prep.add_argument("--language", help="language of folder items that name none (en, zh, ja, or an espeak code)")
    # No defaults here: prepare_dataset's apply (importing them would load torch for every command).
    prep.add_argument("--min-seconds", type=float, help="drop shorter clips (default 0.5, as the reference)")
    prep.add_argument("--max-seconds", type=float, help="drop longer clips (default 20)")
    prep.add_argument("--shard-size", type=int, help="utterances per shard, the unit of resuming (default 256)")
    prep.add_argument("--weights-dir", type=Path, help="folder with the EnCodec weights (default: the weights cache)")
    prep.add_argument("--device", default="cpu")
    prep.add_argument("--random-codec", action="store_true",
                      help="untrained EnCodec (no download; for trying the pipeline, not for real training)")
    prep.add_argument("--no-progress", action="store_true")
    prep.set_defaults(func=run_prepare)

    train = subparsers.add_parser(
        "train",
        help="train or fine-tune a model on a prepared folder (torchrun for several GPUs)",
        description="Train VALL-E X. Options come from --config (YAML with TrainConfig keys) and the flags "
                    "below (flags win). Several GPUs: torchrun --nproc_per_node=N -m vallex train ...",
    )
    train.add_argument("--config", type=Path, help="YAML file of training options")
    train.add_argument("--data", help="prepared folder (vallex prepare-data --out)")
    train.add_argument("--out", dest="out_dir", help="run folder: checkpoints, logs; resumes if it has one")
    train.add_argument("--model", help="'tiny', 'public' or a model config JSON (ignored with --init-checkpoint)")
    train.add_argument("--init-checkpoint", help="fine-tune from these weights (e.g. vallex-checkpoint.pt)")
    train.add_argument("--init-language-from", help="seed new languages' embedding rows from this language")
    train.add_argument("--stage", choices=("both", "ar", "nar"))
    train.add_argument("--max-steps", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"))
    train.add_argument("--device")
    train.add_argument("--no-resume", dest="resume", action="store_const", const=False, default=None,
                       help="start from scratch even if the run folder has a checkpoint")
    train.set_defaults(func=run_train)


def run_prepare(args: argparse.Namespace) -> int:
    from vallex.training.prepare import prepare_dataset, read_recording_list, scan_folder

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.language and args.recording_list:
        raise ValueError("--language applies to --folder only; a recording list names each row's language.")
    items = scan_folder(args.folder, args.language) if args.folder else read_recording_list(args.recording_list)
    if not items:
        raise ValueError(f"No audio files found in {args.folder or args.recording_list}.")
    from vallex.weights.codec import pretrained_codec
    from vallex.weights.random_weights import random_codec

    codec = random_codec(device=args.device) if args.random_codec else pretrained_codec(
        args.weights_dir, device=args.device)
    given = {name: getattr(args, name) for name in ("min_seconds", "max_seconds", "shard_size")
             if getattr(args, name) is not None}
    report = prepare_dataset(items, args.out, codec, progress=not args.no_progress, **given)
    print(report.summary())
    if report.added == 0 and report.already_done == 0:  # a folder with nothing to train on is no success
        raise ValueError(f"Nothing was prepared: all {report.skipped_count} item(s) were skipped "
                         f"({report.skip_counts()}); the reasons per item are above.")
    print(f"Prepared data: {args.out}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from vallex.training.trainer import TrainConfig, train

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = {k: getattr(args, k) for k in ("data", "out_dir", "model", "init_checkpoint", "init_language_from",
                                               "stage", "max_steps", "batch_size", "lr", "precision", "device",
                                               "resume")}
    if args.config:
        config = TrainConfig.from_yaml(args.config, **overrides)
    else:
        config = TrainConfig.from_dict({k: v for k, v in overrides.items() if v is not None})
    result = train(config)
    if result.last_checkpoint is not None:  # only the main process reports
        print(f"Trained to step {result.step}; last checkpoint {result.last_checkpoint}"
              + (f", validation loss {result.valid_loss:.4f}" if result.valid_loss is not None else ""))
    return 0
