"""Progress bars: live on a terminal or in a notebook, near silent in a log.

tqdm redraws its bar on every update. On a terminal that is one line rewritten in place; with stderr sent
to a file or a pipe, each redraw becomes a line of its own (a short synthesis wrote 230 of them). So when
stderr is not interactive, a bar shows nothing for its first minute and then at most one line a minute, and
fine-grained bars (one step of one sentence) show nothing at all.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

#: Seconds between a bar's lines when stderr is not interactive (a log keeps one line a minute of a long job).
LOG_INTERVAL_S = 60.0


def interactive() -> bool:
    """Whether progress bars can redraw in place: stderr is a terminal, or tqdm draws notebook widgets."""
    from tqdm.auto import tqdm

    notebook = any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)
    return notebook or bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress_bar(iterable: Iterable | None = None, *, fine: bool = False, **options: Any):
    """A ``tqdm`` bar (``options`` are tqdm's: ``total``, ``desc``, ``unit``, ``leave``...) that suits stderr.

    ``fine``: the bar counts small steps inside another bar's step (AR steps of a sentence); it is disabled
    unless stderr is interactive. Update it with ``update()``, not ``refresh()``, so that its interval holds.
    """
    from tqdm.auto import tqdm

    if not interactive():
        # maxinterval too: tqdm's monitor thread otherwise forces a redraw every 10 s.
        options = {**options, "disable": fine, "mininterval": LOG_INTERVAL_S, "maxinterval": LOG_INTERVAL_S,
                   "delay": LOG_INTERVAL_S}
    return tqdm(iterable, **options)
