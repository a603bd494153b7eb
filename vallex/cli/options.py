"""What the commands share: the ``--device``, ``--dtype`` and ``--threads`` options, the sampling options (one
per :class:`~vallex.inference.sampling_settings.Sampling` setting, and ``--seed``), and checks: reading a text
file, where an output may go, the languages the checkpoint speaks.

Each check raises ValueError naming the option the user typed, so ``vallex.cli.main`` prints one line (exit 2),
and each runs before any model loads.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vallex.files import read_small_text
from vallex.inference.sampling_settings import SEED, Sampling, Setting

if TYPE_CHECKING:
    from vallex.languages import Languages


#: What ``--dtype`` accepts (:mod:`vallex.inference.precision`; ``auto`` is its ``resolve_precision``'s choice).
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16", "int8")


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device``: cuda, cuda:N, mps or cpu; unset: the best available (:func:`vallex.api.select_device`)."""
    parser.add_argument("--device", help="cuda, mps or cpu (default: the best available)")


def add_dtype_option(parser: argparse.ArgumentParser) -> None:
    """``--dtype``: an inference precision or ``auto`` (the default)."""
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto",
                        help="inference precision (default auto: the fastest measured for this CPU class, e.g. "
                        "int8 on AVX512-BF16/VNNI x86; on CUDA bfloat16 from compute capability 8.0 on, else "
                        "float16; float32 reproduces the reference exactly; `vallex doctor` checks a precision on "
                        "this device)")


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads``: torch's CPU threads (checked by :func:`threads_from_args`)."""
    parser.add_argument("--threads", type=int, help="CPU threads for torch")


#: Most ``--threads``: more than a few per core only slows torch down, and far more fails to start the threads.
MAX_THREADS = 1024


def threads_from_args(args: argparse.Namespace) -> int | None:
    """``--threads``, refused outside 1 to :data:`MAX_THREADS` (before any model loads)."""
    if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
        raise ValueError(f"--threads must be a whole number from 1 to {MAX_THREADS} (this machine has "
                         f"{os.cpu_count() or 'an unknown number of'} CPU cores), got {args.threads}.")
    return args.threads


def option_name(setting: Setting) -> str:
    """A setting's option: ``--top-k`` for ``top_k``."""
    return "--" + setting.name.replace("_", "-")


def add_sampling_options(parser: argparse.ArgumentParser, sampling: type[Sampling] = Sampling) -> None:
    """One option per setting of ``sampling``, its type, default, choices and help from the setting (read them
    back with :func:`sampling_from_args`)."""
    for setting in sampling.settings():
        parser.add_argument(option_name(setting), **_argument(setting, help=sampling.help_of(setting, option_name)))


def sampling_from_args(args: argparse.Namespace, sampling: type[Sampling] = Sampling) -> Sampling:
    """The :class:`Sampling` the options say; a ValueError naming the option (``--top-k``) for a bad value."""
    return sampling.from_values({setting.name: getattr(args, setting.name) for setting in sampling.settings()},
                                label=option_name)


def add_seed_option(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    """``--seed`` (:data:`~vallex.inference.sampling_settings.SEED`; read it back with :func:`seed_from_args`)."""
    parser.add_argument(option_name(SEED), **_argument(SEED, SEED.help, default))


def seed_from_args(args: argparse.Namespace) -> int | None:
    """``--seed``, checked (a ValueError naming ``--seed``)."""
    return SEED.check(args.seed, option_name(SEED))


def _argument(setting: Setting, help: str, default: Any = None) -> dict[str, Any]:
    """``add_argument``'s keywords for ``setting`` (``default``: the command's own, else the setting's)."""
    default = setting.default if default is None else default
    help = help.replace("%", "%%")  # argparse %-formats help texts
    if setting.kind is bool:  # a flag; one on by default can be turned off (--no-...)
        return {"action": argparse.BooleanOptionalAction if default else "store_true", "help": help}
    shown = setting.none_means if default is None else default
    help_text = f"{help} (default: {shown})"
    if setting.choices:
        return {"choices": list(setting.choices), "default": default, "help": help_text}
    return {"type": setting.kind, "default": default, "help": help_text}


def read_text_file(path: Path, option: str) -> str:
    """The UTF-8 text of ``path``; ValueError (naming ``option``) for anything but a small regular UTF-8 file."""
    return read_small_text(path, f"{option} {path}")


def check_output(output: Path, option: str, inputs: dict[str, Path | None]) -> None:
    """Refuse an output that would replace one of ``inputs`` (option → path) or that is a folder.

    A missing parent folder is fine: it is created when the file is written.
    """
    if output.is_dir():
        raise ValueError(f"{option} {output} is a folder: give a file name.")
    target = output.resolve()
    for name, path in inputs.items():
        if path is not None and path.resolve() == target:
            raise ValueError(f"{option} {output} is the {name} file: writing there would destroy it; choose "
                             "another output name.")
    for parent in target.parents:  # the first existing ancestor must be a folder we can create folders in
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {output}: {parent} is a file, not a folder.")
            break


def checkpoint_languages(weights_dir: Path | None, checkpoint: Path | None) -> Languages:
    """The languages of the checkpoint a command will load (``--checkpoint``, else the weights folder's or the
    cache's), read from its configuration without loading it; the public checkpoint's when none is here yet
    (a download brings that one)."""
    from vallex.languages import Languages
    from vallex.weights.checkpoint import checkpoint_languages as read_languages
    from vallex.weights.manager import WeightsManager, WeightsNotFoundError

    if checkpoint is not None and not checkpoint.is_file():
        raise ValueError(f"--checkpoint {checkpoint} does not exist: give the .pt or .safetensors file, e.g. "
                         "runs/my-run/checkpoint-00002000.pt.")
    try:
        paths = WeightsManager(weights_dir, checkpoint=checkpoint).resolve(("vallex",), download=False)
    except WeightsNotFoundError:
        return Languages.public()
    return read_languages(paths.vallex, paths.vallex_config)


def check_language_options(args: argparse.Namespace) -> None:
    """``--language`` and ``--accent`` against the languages of the checkpoint ``args`` names (before it loads)."""
    languages = checkpoint_languages(args.weights_dir, args.checkpoint)
    if args.language not in languages.text_choices:
        raise ValueError(f"--language {args.language!r}: the checkpoint speaks {languages}; choose one of "
                         f"{', '.join(languages.text_choices)}.")
    try:
        languages.accent(args.accent)
    except ValueError:
        raise ValueError(f"--accent {args.accent!r}: the checkpoint speaks {languages}; choose one of them.") from None
