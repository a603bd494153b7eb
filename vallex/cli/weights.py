"""``vallex download`` and ``vallex make-random-weights``: getting model files in place."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

# cheap: these modules import no model code
from vallex.weights.checks import CHECKSUMS_NAME, RANDOM, REPLACED
from vallex.weights.environment import CHECKPOINT_REPO_ENV, ENCODEC_URL_ENV, HF_MIRROR_ENV, VOCOS_REPO_ENV
from vallex.weights.record import SOURCES_RECORD_NAME
from vallex.weights.sources import COMPONENTS

if TYPE_CHECKING:
    from vallex.weights.manager import WeightsManager
    from vallex.weights.sources import WeightFile

_LAYOUT = """weights folder layout (--weights-dir / $VALLEX_WEIGHTS_DIR):
  DIR/vallex-checkpoint.pt                 VALL-E X, {"model": state_dict} (or vallex-checkpoint.safetensors)
  DIR/vallex-config.json                   optional model sizes (absent: the public checkpoint's)
  DIR/encodec_24khz-d7cc33bc.th            EnCodec 24 kHz state dict
  DIR/vocos-encodec-24khz/config.yaml      Vocos architecture
  DIR/vocos-encodec-24khz/pytorch_model.bin
without a folder the files live in the Hugging Face and torch hub caches."""
#: Both commands end their help with the folder layout, kept as written.
_LAYOUT_EPILOG = {"epilog": _LAYOUT, "formatter_class": argparse.RawDescriptionHelpFormatter}


def register(subparsers: argparse._SubParsersAction) -> None:
    download = subparsers.add_parser(
        "download",
        help="fetch the VALL-E X, EnCodec and Vocos weights",
        description="Download the model files (with progress bars) into the standard caches, or into "
        "--weights-dir in the layout below. Each file's public sources are tried in order, each download is "
        "checked (the checkpoint key by key, then by its published SHA-256 or, for a copy with other bytes, its "
        "published tensors; EnCodec and Vocos by their SHA-256) and its source and SHA-256 recorded in "
        f"{SOURCES_RECORD_NAME}. Your own sources are tried first: --checkpoint-repo / ${CHECKPOINT_REPO_ENV}, "
        f"${VOCOS_REPO_ENV}, ${ENCODEC_URL_ENV}. Mirrors: HF_ENDPOINT / {HF_MIRROR_ENV} for Hugging Face files.",
        **_LAYOUT_EPILOG,
    )
    download.add_argument("--weights-dir", type=Path, help="download into this folder instead of the caches")
    download.add_argument("--only", nargs="+", choices=COMPONENTS,
                          help="download only these models")
    download.add_argument("--checkpoint-repo", metavar="OWNER/NAME[/FILE][@REV]",
                          help=f"a copy of vallex-checkpoint.pt to try first (replaces ${CHECKPOINT_REPO_ENV}; "
                          "several separated by commas)")
    download.add_argument("--check", action="store_true",
                          help="check each file as loading checks it (SHA-256, then form) and report its path, "
                          "size, source and SHA-256, why it cannot be used, and whether it still matches what was "
                          "recorded when it was downloaded; exit 1 on any problem (no network)")
    download.add_argument("--force", action="store_true", help="download again even if present")
    download.set_defaults(func=run_download)

    random = subparsers.add_parser(
        "make-random-weights",
        help="write random-weight model files for offline development (outputs are noise)",
        description="Development tool: writes VALL-E X, EnCodec and Vocos files with RANDOM weights in exactly the "
        "on-disk formats of the real ones, so the app, CLI, notebooks and tests run the real loading code "
        "offline. Everything synthesised with them is noise.",
        **_LAYOUT_EPILOG,
    )
    random.add_argument("directory", type=Path, help="folder to write (created if needed)")
    random.add_argument("--size", choices=["tiny", "full"], default="tiny",
                        help="VALL-E X size: tiny (2 layers, ~5 MB) or full (the public shape, 1.48 GB)")
    random.add_argument("--seed", type=int, default=0)
    random.add_argument("--force", action="store_true",
                        help="replace model files in DIRECTORY that are not random weights (refused otherwise)")
    random.set_defaults(func=run_make_random_weights)


def run_download(args: argparse.Namespace) -> int:
    from vallex.weights.manager import WeightsManager

    manager = WeightsManager(args.weights_dir, checkpoint_repo=args.checkpoint_repo)
    components = args.only or list(COMPONENTS)
    if args.check:
        return _check(manager, components)
    paths = manager.download(components, force=args.force)
    for name in ("vallex", "encodec", "vocos_config", "vocos_model"):
        if getattr(paths, name) is not None:
            print(f"{name:13s} {getattr(paths, name)}")
    return 0


def _check(manager: WeightsManager, components: list[str]) -> int:
    """Print each file's state, path, size, source and SHA-256, checked as loading checks it (its SHA-256 against
    the pin or the random-weights folder's checksum file, then its form); 1 when one is missing, cannot be used or
    differs from its download record."""
    from vallex.weights.checks import check_form, checkpoint_config_file, identify, read_checksums

    problems = 0
    try:
        checksums = read_checksums(manager.weights_dir)
    except ValueError as error:  # every load stops here too; the files are then checked as in any folder
        problems += 1
        checksums = None
        print(f"UNUSABLE {CHECKSUMS_NAME}\n         cannot be used: {error}")
    for weight_file, path in manager.status():
        if weight_file.component not in components:
            continue
        if path is None:
            problems += 1
            print(f"MISSING  {weight_file.label}\n         sources: {manager.sources_text(weight_file)}")
            continue
        try:
            kind = identify(weight_file, path, manager.sha256, checksums, manager.weights_dir)
            config = checkpoint_config_file(path.parent, kind, manager.sha256, checksums)
            check_form(weight_file, path, config if weight_file.component == "vallex" else None)
            reason = None
        except Exception as error:  # noqa: BLE001 - whatever stops a load (a YAML or unpickling error too) is reported
            kind, reason = None, " ".join(str(error).split())  # one line, whole: never cut
        record = manager.record(weight_file, path)
        digest = manager.sha256(path)
        state = "ok" if reason is None else "UNUSABLE"
        if record is None:
            source = "not recorded (placed by hand or downloaded before records were kept)"
        elif record.get("sha256") == digest:
            source = f"{record.get('source')} (downloaded {record.get('downloaded')})"
        else:
            state = "CHANGED" if reason is None else state
            source = f"{record.get('source')}; recorded SHA-256 {record.get('sha256')}: the file changed since"
        if state != "ok":
            problems += 1
        published = f"; the published file: {weight_file.published_size}" if weight_file.published_size else ""
        print(f"{state:8s} {weight_file.description}\n         path:    {path}\n"
              f"         size:    {_size_text(path.stat().st_size)}{published}\n         source:  {source}\n"
              f"         sha256:  {digest}")
        if weight_file.sha256:
            print(f"         pinned:  {_pin_state(weight_file, path, digest)}")
        if kind in _KIND_TEXT:
            print(f"         is:      {_KIND_TEXT[kind]}")
        if reason is not None:
            print(f"         cannot be used: {reason}")
    return 1 if problems else 0


#: What a file in a random-weights folder is, by :func:`vallex.weights.checks.identify` (the pin line says the rest).
_KIND_TEXT = {
    RANDOM: "the random file make-random-weights wrote here (everything made with it is noise)",
    REPLACED: "not the random file make-random-weights wrote here: a file placed by hand, checked for its form",
}


def _size_text(size: int) -> str:
    """``size`` bytes as people read it: "4.9 MB", "1.48 GB" (decimal units, as the published sizes are given)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g} {unit} ({size:,} bytes)"
    return f"{size:,} bytes"


def _pin_state(weight_file: WeightFile, path: Path, digest: str) -> str:
    """Whether ``path`` (SHA-256 ``digest``) is the published file, for ``--check``."""
    if digest.startswith(weight_file.sha256.lower()):
        return "the published file"
    other = f"other bytes than the published {weight_file.sha256[:16]}..."
    if weight_file.same_tensors_suffice:  # a converted or re-pickled copy may hold the same tensors
        return f"{other}; `vallex checkpoint-digest {path}` compares its tensors"
    return other


def run_make_random_weights(args: argparse.Namespace) -> int:
    from vallex.weights.checks import NOISE_WARNING
    from vallex.weights.random_weights import make_random_weights

    if args.directory.exists() and not args.directory.is_dir():
        raise ValueError(f"{args.directory} exists and is not a folder.")
    paths = make_random_weights(args.directory, size=args.size, seed=args.seed, force=args.force)
    print(f"WARNING: {NOISE_WARNING}")
    print(f"Wrote random {args.size} weights to {args.directory}:")
    for name in ("vallex", "vallex_config_path", "encodec", "vocos_config", "vocos_model"):
        print(f"  {getattr(paths, name)}")
    print(f"Use them with --weights-dir {args.directory} or VALLEX_WEIGHTS_DIR={args.directory}.")
    return 0
