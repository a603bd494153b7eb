"""Growing a model for a new language: one more language-embedding row, more text-embedding rows.

Old rows are copied unchanged, so the grown model speaks en/zh/ja exactly as before until it is trained.
A new language row starts as a copy of a related language's row (``init_from``) or the mean of the
existing rows; new text rows (only needed beyond the checkpoint's 2048) start at the scale of the old ones.
"""
from __future__ import annotations

import dataclasses

import torch

from vallex.languages import MODEL_LANGUAGE_ID
from vallex.model import VallexModel


@torch.no_grad()
def extend_model(
    model: VallexModel,
    *,
    num_languages: int | None = None,
    text_vocab_size: int | None = None,
    init_from: str | int | None = None,
    seed: int = 0,
) -> VallexModel:
    """A new model with at least ``num_languages`` language rows and ``text_vocab_size`` text rows.

    Args:
        model: the model to grow (left unchanged).
        num_languages: rows of ``ar/nar_language_embedding`` wanted (never shrinks).
        text_vocab_size: rows of ``ar/nar_text_embedding`` wanted (never shrinks).
        init_from: language ("en"/"zh"/"ja" or a row number) whose row seeds the new rows; default: the mean.
        seed: seeds the new text rows.
    Returns:
        The grown model (``model`` itself when nothing needs to grow), on ``model``'s device.
    """
    cfg = model.config
    languages = max(cfg.num_languages, num_languages or 0)
    vocab = max(cfg.text_vocab_size, text_vocab_size or 0)
    if (languages, vocab) == (cfg.num_languages, cfg.text_vocab_size):
        return model
    if isinstance(init_from, str):
        if init_from not in MODEL_LANGUAGE_ID:
            raise ValueError(f"init_from must be one of {', '.join(MODEL_LANGUAGE_ID)} or a row number, "
                             f"got {init_from!r}.")
        init_from = MODEL_LANGUAGE_ID[init_from]
    if init_from is not None and not 0 <= init_from < cfg.num_languages:
        raise ValueError(f"init_from row {init_from} does not exist (the model has {cfg.num_languages} languages).")
    device = next(model.parameters()).device
    grown = VallexModel(dataclasses.replace(cfg, num_languages=languages, text_vocab_size=vocab)).to(device)
    state = model.state_dict()
    generator = torch.Generator().manual_seed(seed)
    for side in ("ar", "nar"):
        key = f"{side}_language_embedding.word_embeddings.weight"
        old = state[key]
        seed_row = old.mean(0) if init_from is None else old[init_from]
        state[key] = torch.cat([old, seed_row.expand(languages - old.shape[0], -1)], dim=0)
        key = f"{side}_text_embedding.word_embeddings.weight"
        old = state[key]
        extra = torch.randn(vocab - old.shape[0], old.shape[1], generator=generator) * old.std().cpu()
        state[key] = torch.cat([old, extra.to(old)], dim=0)
    grown.load_state_dict(state, strict=True)
    grown.tie_weights()
    return grown.train(model.training)
