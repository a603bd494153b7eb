"""``vallex convert-checkpoint``: the reference ``.pt`` to safetensors (or back), checked strictly."""
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
