"""``vallex convert-checkpoint``: the reference ``.pt`` to safetensors (or back), checked strictly;
``vallex checkpoint-digest``: which tensors a checkpoint holds, however its file was written."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert-checkpoint",
        help="convert vallex-checkpoint.pt to .safetensors (memory-mapped, no pickle)",
        description="Read a VALL-E X checkpoint safely (weights_only) and write it in the format named by the "
        "target's suffix: .safetensors (recommended: loads without unpickling, memory-mapped) or .pt "
        "({'model': state_dict}, the reference format). Every key and shape is checked.",
    )
    parser.add_argument("source", type=Path, help="vallex-checkpoint.pt (or .safetensors)")
    parser.add_argument("target", type=Path, help="output file, e.g. vallex-checkpoint.safetensors")
    parser.add_argument("--config", type=Path,
                        help="model sizes as JSON (default: stored in the file, beside it, or the public ones)")
    parser.set_defaults(func=run)

    digest = subparsers.add_parser(
        "checkpoint-digest",
        help="print the digest of a checkpoint's tensors (the same for re-pickled and converted copies)",
        description="Read each checkpoint safely (.pt or .safetensors) and print the SHA-256 of its tensors in one "
        "canonical form (sorted names, dtypes, shapes, little-endian values), then the file: copies re-pickled "
        "elsewhere or converted with convert-checkpoint print the same digest as the file they came from, and any "
        "changed value, dtype, shape or name another. Says whether each is the published checkpoint's.",
    )
    digest.add_argument("files", type=Path, nargs="+", metavar="FILE", help="vallex-checkpoint.pt, .safetensors, ...")
    digest.set_defaults(func=run_digest)


def run(args: argparse.Namespace) -> int:
    from vallex.config import VallexConfig
    from vallex.weights.checkpoint import convert_checkpoint

    if args.target.suffix not in (".safetensors", ".pt"):
        raise ValueError(f"The target must end in .safetensors or .pt, got {args.target.name}.")
    if args.target.resolve() == args.source.resolve():
        raise ValueError("The target must be a different file from the source.")
    config = VallexConfig.from_json(args.config) if args.config else None
    path = convert_checkpoint(args.source, args.target, config)
    print(f"Wrote {path}.", file=sys.stderr)
    return 0


def run_digest(args: argparse.Namespace) -> int:
    from vallex.weights import checkpoint

    for path in args.files:
        digest = checkpoint.checkpoint_digest(path)
        print(f"{digest}  {path}")
        if checkpoint.PUBLISHED_STATE_DIGEST is not None:
            verdict = "the published" if digest == checkpoint.PUBLISHED_STATE_DIGEST else "not the published"
            print(f"{path}: {verdict} checkpoint's tensors", file=sys.stderr)
    if checkpoint.PUBLISHED_STATE_DIGEST is None:
        from vallex.weights.sources import VALLEX_CHECKPOINT

        print("No digest of the published checkpoint's tensors is recorded in this version: compare with this "
              f"command's digest of a file whose SHA-256 is {VALLEX_CHECKPOINT.sha256}.", file=sys.stderr)
    return 0
