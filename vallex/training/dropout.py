"""Training-time dropout for :class:`vallex.model.VallexModel`, added with forward hooks.

The inference model has no dropout modules; the reference trained with dropout 0.1 on the positional
embeddings (AR text/audio, NAR audio), after self-attention, inside and after the feed-forward block.
Hooks put it back in those places for training only: they act when the module is in ``train()`` mode and
do nothing in ``eval()``, so decoding a model under training is unaffected. (The reference's dropout on
the attention probabilities is not reproduced: the fused attention kernel has no hook point.)
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from vallex.model import VallexModel


def add_dropout(model: VallexModel, p: float = 0.1) -> list[RemovableHandle]:
    """Register the dropout hooks on ``model``; returns the handles (``handle.remove()`` undoes them)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p}.")
    if p == 0.0:
        return []

    def after(module: nn.Module, inputs, output):
        return F.dropout(output, p, module.training)

    def before(module: nn.Module, inputs):
        return (F.dropout(inputs[0], p, module.training),) + tuple(inputs[1:])

    handles = []
    # nar_text_position had dropout 0.0 in the reference.
    for name in ("ar_text_position", "ar_audio_position", "nar_audio_position"):
        handles.append(getattr(model, name).register_forward_hook(after))
    for decoder in (model.ar_decoder, model.nar_decoder):
        for layer in decoder.layers:
            handles.append(layer.self_attn.register_forward_hook(after))  # dropout1 (attention output)
            handles.append(layer.linear2.register_forward_pre_hook(before))  # inside the FFN, after ReLU
            handles.append(layer.linear2.register_forward_hook(after))  # dropout2 (FFN output)
    return handles
