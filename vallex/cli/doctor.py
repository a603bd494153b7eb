"""``vallex doctor``: run the golden cases on this device and precision and compare with the reference's values."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vallex.cli.options import add_device_option, add_dtype_option, add_threads_option, threads_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check that this device and precision compute what the reference computes",
        description="Run the golden cases (the reference implementation's greedy codes and first-step logits, "
        "made on a CPU in float32) on --device in --dtype, through the same code as synthesis, and compare: per "
        "check passed/FAILED, its deviation and its bound, then the device, precision, kernel plan, torch build "
        "and timing. Exit status 0 when every check passed, 1 when one failed (with what to do), 2 for bad "
        "input. The result is kept (in $XDG_CACHE_HOME/vallex/doctor-last.json) for the app and GET /health.",
    )
    add_device_option(parser)
    add_dtype_option(parser)
    parser.add_argument("--golden", type=Path, metavar="DIR", help="golden folder (default: $VALLEX_GOLDEN_DIR, else "
                        "the repository's tests/golden/public next to the package: run it from a clone)")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON instead of text")
    add_threads_option(parser)
    parser.add_argument("--no-save", action="store_true", help="do not keep this result as the last one")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from vallex.doctor import format_report, run_doctor, save_last_result

    threads = threads_from_args(args)
    if threads is not None:
        torch.set_num_threads(threads)
    report = run_doctor(args.device, args.dtype, args.golden)  # ValueError (exit 2) before anything runs
    if not args.no_save:
        try:
            save_last_result(report)
        except OSError as error:  # the check itself ran: a read-only cache only loses the app's copy
            print(f"vallex doctor: note: the result was not kept ({error}).", file=sys.stderr)
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
    else:
        print(format_report(report))
    return 0 if report.passed else 1
