"""One utterance from the reference's inputs (text ids with the prompt transcript's first, language codes, the
prompt's codes): its per-token language ids (:func:`language_ids`, which synthesis uses too) and AR then NAR
(:func:`generate`, what ``vallex doctor`` and the golden tests run).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from vallex.inference.ar import ARResult, ar_decode
from vallex.inference.nar import NARInput, nar_decode
from vallex.languages import Languages
from vallex.model import VallexModel


def language_ids(
    num_tokens: int,
    enroll_len: int,
    prompt_language: str,
    text_language: str | Sequence[str],
    device: torch.device | str | None = None,
    languages: Languages | None = None,
) -> Tensor:
    """Per-token language ids LongTensor [S] for ``[prompt transcript ; target text]``: each language's row in
    ``languages`` (the model's table; default the public checkpoint's en=0, zh=1, ja=2).

    The first ``enroll_len`` tokens get ``prompt_language``; the rest get ``text_language``: one
    language for all (accent control) or one per target token (as the text front end returns them).
    """
    table = languages or Languages.public()
    if not 0 <= enroll_len <= num_tokens:
        raise ValueError(f"enroll_len must be between 0 and {num_tokens}, got {enroll_len}.")
    target_len = num_tokens - enroll_len
    if isinstance(text_language, str):
        target = [text_language] * target_len
    elif isinstance(text_language, (list, tuple)):
        target = list(text_language)
        if len(target) != target_len:
            raise ValueError(
                f"text_language has {len(target)} entries but there are {target_len} target text tokens."
            )
    else:
        raise ValueError(
            f"text_language must be a language code or a list of them, not {type(text_language).__name__}."
        )
    ids = [table.row(lang) for lang in [prompt_language] * enroll_len + target]
    return torch.tensor(ids, dtype=torch.long, device=device)


@dataclass
class GenerationResult:
    """What :func:`generate` made of one utterance."""

    codes: Tensor  # LongTensor [1, T, 8], generated frames only
    stop_reason: str  # "eos" | "maxlen"
    ar: ARResult


def generate(
    model: VallexModel,
    text: Tensor,
    enroll_len: int,
    prompt_codes: Tensor,
    prompt_language: str,
    text_language: str | Sequence[str],
    **ar_options,
) -> GenerationResult:
    """AR then NAR, from reference-style inputs.

    Args:
        text: LongTensor [1, S] = prompt transcript ids (``enroll_len`` of them) ++ target ids.
        prompt_codes: LongTensor [1, P, 8] (P = 0 without a prompt).
        prompt_language: language of the prompt transcript ("en", "zh", ...).
        text_language: one language (accent override) or one per target token.
        Both are rows of the model's language table (:meth:`vallex.languages.Languages.of` its config), as
        synthesis reads them: a ValueError for a language the model does not speak.
        ar_options: forwarded to :func:`ar_decode` (temperature, top_k, top_p, best_of, generator, ...).
    Returns:
        :class:`GenerationResult` with codes [1, T, 8].
    """
    if prompt_codes.ndim != 3 or prompt_codes.shape[0] != 1 or prompt_codes.shape[2] != model.config.num_quantizers:
        raise ValueError(
            f"prompt codes must have shape [1, P, {model.config.num_quantizers}], got {tuple(prompt_codes.shape)}."
        )
    languages = Languages.of(model.config)
    device = next(model.parameters()).device
    text = text.to(device).long()
    prompt_codes = prompt_codes.to(device).long()
    langs = language_ids(text.shape[1], enroll_len, prompt_language, text_language, device, languages)[None]  # [1, S]
    ar = ar_decode(model, text, langs, prompt_codes[..., 0], **ar_options)
    codes = nar_decode(model, [NARInput(text, langs, prompt_codes, ar.codes)])[0]
    return GenerationResult(codes=codes, stop_reason=ar.stop_reason, ar=ar)
