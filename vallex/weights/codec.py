"""The audio codec (EnCodec + Vocos) built from the weight files the manager finds.

    codec = pretrained_codec()                             # the caches, downloading what is missing
    codec = pretrained_codec("/data/weights")              # a weights folder (nothing is downloaded)
    encoder = pretrained_codec(components=("encodec",))    # enough for making voice prompts

:mod:`vallex.audio.codec` knows nothing of where the files come from; this is where the two meet.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from vallex.weights.manager import resolve_weights

if TYPE_CHECKING:
    import torch

    from vallex.audio.codec import AudioCodec


def pretrained_codec(weights_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu", *,
                     download: bool = True, components: tuple[str, ...] = ("encodec", "vocos")) -> AudioCodec:
    """The published EnCodec and Vocos through the weights manager (the caches, or ``weights_dir`` in the
    documented layout), each loaded on first use.

    ``components=("encodec",)`` is enough for making prompts; ``("vocos",)`` for decoding only.

    Raises:
        WeightsNotFoundError: a file of ``components`` is missing (and could not be downloaded).
    """
    from vallex.audio.codec import AudioCodec

    return AudioCodec.from_paths(resolve_weights(weights_dir, download=download, components=components), device)
