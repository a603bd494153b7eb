"""Growing a model for a new language: one more language-embedding row, more text-embedding rows.

Old rows are copied unchanged, so the grown model speaks its old languages exactly as before until it is
trained. A new language row starts as a copy of a related language's row (``init_from``) or the mean of the
existing rows; new text rows (only needed beyond the checkpoint's 2048) start at the scale of the old ones.
The grown configuration names every row's language (``config.languages``), so the checkpoints saved from it
say which languages they speak.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from vallex.languages import Languages, check_codes
from vallex.model import VallexModel


@torch.no_grad()
def extend_model(
    model: VallexModel,
    *,
    languages: Sequence[str] | None = None,
    num_languages: int | None = None,
    text_vocab_size: int | None = None,
    init_from: str | int | None = None,
    seed: int = 0,
) -> VallexModel:
    """A new model with a language row for each of ``languages`` (or at least ``num_languages`` rows, unnamed)
    and at least ``text_vocab_size`` text rows.

    Args:
        model: the model to grow (left unchanged).
        languages: the language of every row wanted, in row order; the model's own languages must be its start
            (a row never changes language). The grown config records them.
        num_languages: rows of ``ar/nar_language_embedding`` wanted when ``languages`` is not given (never
            shrinks); new rows then have no name.
        text_vocab_size: rows of ``ar/nar_text_embedding`` wanted (never shrinks).
        init_from: language (a code of the model, e.g. "en", or a row number) whose row seeds the new rows;
            default: the mean.
        seed: seeds the new text rows.
    Returns:
        The grown model (``model`` itself when nothing needs to grow), on ``model``'s device.
    """
    cfg = model.config
    names = cfg.languages
    if languages is not None:
        wanted = check_codes(languages, "languages")
        if names is not None and wanted[:len(names)] != names[:len(wanted)]:
            raise ValueError(f"The model's language rows are {', '.join(names)}; they cannot become "
                             f"{', '.join(wanted)} (the same embedding row would mean different languages).")
        num_languages = len(wanted)
        if len(wanted) > cfg.num_languages:
            names = wanted
    rows = max(cfg.num_languages, num_languages or 0)
    vocab = max(cfg.text_vocab_size, text_vocab_size or 0)
    if (rows, vocab) == (cfg.num_languages, cfg.text_vocab_size):
        return model
    if isinstance(init_from, str):
        known = Languages(cfg.languages) if cfg.languages is not None else Languages.public()
        if init_from not in known:
            raise ValueError(f"init_from must be one of {known} or a row number, got {init_from!r}.")
        init_from = known.row(init_from)
    if init_from is not None and not 0 <= init_from < cfg.num_languages:
        raise ValueError(f"init_from row {init_from} does not exist (the model has {cfg.num_languages} languages).")
    if names is not None and len(names) != rows:
        names = None  # rows added without names
    device = next(model.parameters()).device
    grown_config = dataclasses.replace(cfg, num_languages=rows, text_vocab_size=vocab, languages=names)
    grown = VallexModel(grown_config).to(device)
    state = model.state_dict()
    generator = torch.Generator().manual_seed(seed)
    for side in ("ar", "nar"):
        key = f"{side}_language_embedding.word_embeddings.weight"
        old = state[key]
        seed_row = old.mean(0) if init_from is None else old[init_from]
        state[key] = torch.cat([old, seed_row.expand(rows - old.shape[0], -1)], dim=0)
        key = f"{side}_text_embedding.word_embeddings.weight"
        old = state[key]
        extra = torch.randn(vocab - old.shape[0], old.shape[1], generator=generator) * old.std().cpu()
        state[key] = torch.cat([old, extra.to(old)], dim=0)
    grown.load_state_dict(state, strict=True)
    grown.tie_weights()
    return grown.train(model.training)
