"""The teacher-forced training forward of VALL-E X and its losses.

One call runs both decoders on a padded batch, the way the trainer the public checkpoint derives from
(lifeiteng/vall-e ``VALLE.forward``, with VALL-E X's language embedding added to the text) does it:

* **AR**: input ``[BOS] + q0`` (padding frames read EOS), target ``q0 + [EOS]``; the text is
  bidirectional, the audio causal, padded keys are masked. Cross-entropy over 1025 classes, summed.
* **NAR**: one stage ``s`` in 1..7 per call. *Prefix mode 1*: the first ``prefix_len`` frames are an
  acoustic prompt that carries all 8 codebooks; the other frames carry codebooks ``0..s-1``; the target is
  codebook ``s`` on the non-prompt frames (padding ignored). The summed cross-entropy is scaled by
  ``frames / (frames - prefix_len * B)`` so its size does not depend on the prompt length.
* ``loss = (ar_loss + nar_loss) / 2`` when both are trained (``train_stage`` 0 in the reference).

The random choices (NAR stage, prefix length) are made by :func:`sample_nar_stage` and
:func:`sample_prefix_len` from generators the caller owns, so a run is reproducible and every DDP rank
draws the same values.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vallex.audio.codec_format import FRAME_RATE, NUM_CODEBOOKS
from vallex.config import VallexConfig
from vallex.model import VallexModel, ar_attention_mask

#: The reference caps the NAR acoustic prompt at 3 s (225 frames).
MAX_PREFIX_FRAMES = 3 * FRAME_RATE
#: Which decoders a step trains (the reference's train_stage 0 / 1 / 2).
TRAIN_STAGES = ("both", "ar", "nar")


@dataclass
class TrainingBatch:
    """A padded batch of utterances (see :func:`vallex.training.dataset.collate`).

    Attributes:
        text: LongTensor [B, S] phoneme ids, padded with 0.
        text_lens: LongTensor [B] number of real text tokens (>= 1).
        text_langs: LongTensor [B, S] language id of every text token (model rows; padding 0).
        codes: LongTensor [B, T, Q] EnCodec codes at 75 Hz (padding frames are ignored, any value).
        code_lens: LongTensor [B] number of real frames (>= 1).
    """

    text: Tensor
    text_lens: Tensor
    text_langs: Tensor
    codes: Tensor
    code_lens: Tensor

    def to(self, device: torch.device | str) -> TrainingBatch:
        """On ``device``; from pinned memory (:meth:`pin_memory`) the copy overlaps the GPU's work."""
        return TrainingBatch(*(t.to(device, non_blocking=True) for t in
                               (self.text, self.text_lens, self.text_langs, self.codes, self.code_lens)))

    def pin_memory(self) -> TrainingBatch:
        """In page-locked memory (``DataLoader(pin_memory=True)`` calls this in its pinning thread)."""
        return TrainingBatch(*(t.pin_memory() for t in
                               (self.text, self.text_lens, self.text_langs, self.codes, self.code_lens)))

    @property
    def size(self) -> int:
        return int(self.text.shape[0])


@dataclass
class ForwardResult:
    """Losses (summed over the batch, float32 scalars) and what was drawn.

    ``loss`` is what a step optimises: ``(ar_loss + nar_loss) / 2`` for ``"both"``, else the one trained.
    ``*_top10_correct``: targets found among the 10 highest logits (the reference's logged accuracy
    times its frame count is ``ar_top10_correct`` and ``nar_top10_correct * nar_scale``).
    ``ar_logits`` [B, T+1, 1025] and ``nar_logits`` [B, T-prefix_len, 1024] are kept for inspection.
    """

    loss: Tensor
    ar_loss: Tensor | None
    nar_loss: Tensor | None
    nar_ce: Tensor | None
    nar_scale: float | None
    nar_stage: int | None
    prefix_len: int | None
    # Counts as 0-dim LongTensors on the batch's device (0 for a part not trained): why tensors, not ints, is
    # that reading them back would make the host wait for the GPU after every micro-batch.
    ar_targets: Tensor | int  # number of AR positions with a loss term
    nar_targets: Tensor | int  # number of NAR positions with a loss term
    ar_top10_correct: Tensor | int
    nar_top10_correct: Tensor | int
    ar_logits: Tensor | None = None
    nar_logits: Tensor | None = None


def sample_nar_stage(rng: random.Random, num_quantizers: int = NUM_CODEBOOKS) -> int:
    """NAR stage 1..Q-1, uniform, drawn exactly as the reference draws it from ``model.rng``."""
    stages = range(1, num_quantizers)
    return rng.choices(stages, weights=[1.0 / len(stages)] * len(stages))[0]


def sample_prefix_len(min_frames: int, generator: torch.Generator | None = None) -> int:
    """Prefix-mode-1 prompt length: uniform in ``[0, 2 * floor(0.25 * min_frames))``, at most 225 frames.

    ``min_frames`` is the shortest utterance of the batch. ``generator=None`` draws from the global torch
    RNG, as the reference does. Batches whose shortest utterance has < 4 frames get no prompt.
    """
    high = 2 * int(0.25 * min_frames)
    if high <= 0:
        return 0
    return min(int(torch.randint(0, high, (), generator=generator).item()), MAX_PREFIX_FRAMES)


def nar_loss_scale(total_frames: int, prefix_len: int, batch_size: int) -> float:
    """``frames / (frames - prefix_len * B)``: makes the NAR loss comparable whatever the prompt length."""
    return float(total_frames) / float(total_frames - prefix_len * batch_size)


def _top10_hits(logits: Tensor, targets: Tensor, ignore: int) -> Tensor:
    """Targets among the 10 highest logits, over positions whose target is not ``ignore`` / -100 (0-dim long)."""
    k = min(10, logits.shape[-1])
    top = logits.detach().topk(k, dim=-1).indices  # [..., k]
    hit = (top == targets.unsqueeze(-1)).any(-1) & (targets != ignore) & (targets >= 0)
    return hit.sum()


def training_forward(
    model: VallexModel,
    batch: TrainingBatch,
    *,
    train_stage: str = "both",
    nar_stage: int | None = None,
    prefix_len: int | None = None,
    nar_scale: float | None = None,
    rng: random.Random | None = None,
    generator: torch.Generator | None = None,
    ar_loss_on_padding: bool = True,
    keep_logits: bool = False,
) -> ForwardResult:
    """Teacher-forced losses of one batch.

    Args:
        model: a :class:`VallexModel` (its ``training`` flag decides dropout, if hooks add any).
        batch: padded :class:`TrainingBatch`.
        train_stage: ``"both"``, ``"ar"`` or ``"nar"``.
        nar_stage: codebook the NAR predicts (1..Q-1); default: drawn with :func:`sample_nar_stage` from
            ``rng`` (a fresh ``random.Random(0)`` if None, which is what a fresh reference model uses).
        prefix_len: prefix-mode-1 prompt frames; default: drawn with :func:`sample_prefix_len` from
            ``generator`` (the global torch RNG if None) and the batch's shortest utterance.
        nar_scale: default :func:`nar_loss_scale` of this batch. The trainer passes the value of the whole
            global batch so that splitting it over GPUs or accumulation steps changes nothing.
        ar_loss_on_padding: the reference also trains padding frames (input EOS -> target EOS), which
            makes the loss depend on how utterances are padded together. ``False`` keeps only each
            utterance's frames and its final EOS (what inference uses); the golden parity needs ``True``.
        keep_logits: return the logits (for tests and debugging).
    """
    if train_stage not in TRAIN_STAGES:
        raise ValueError(f"train_stage must be one of {TRAIN_STAGES}, got {train_stage!r}.")
    padded = _PaddedBatch.of(batch, model.config)
    ar = nar = None
    if train_stage in ("both", "ar"):
        ar = _ar_part(model, padded, ar_loss_on_padding)
    if train_stage in ("both", "nar"):
        # Drawn after the AR part: with generator=None the prefix comes from the global torch RNG, after the
        # AR part's dropout, as in the reference.
        n_q, shortest = padded.num_quantizers, int(padded.code_lens.min())
        if nar_stage is None:
            nar_stage = sample_nar_stage(random.Random(0) if rng is None else rng, n_q)
        if not 1 <= nar_stage < n_q:
            raise ValueError(f"nar_stage must be in 1..{n_q - 1}, got {nar_stage}.")
        if prefix_len is None:
            prefix_len = sample_prefix_len(shortest, generator)
        if not 0 <= prefix_len < shortest:
            raise ValueError(f"prefix_len {prefix_len} must be below the shortest utterance ({shortest}).")
        nar = _nar_part(model, padded, nar_stage, prefix_len, nar_scale)

    if ar is not None and nar is not None:
        loss = (ar.loss + nar.loss) / 2
    else:
        loss = ar.loss if ar is not None else nar.loss
    has_ar, has_nar = ar is not None, nar is not None
    return ForwardResult(
        loss=loss, ar_loss=ar.loss if has_ar else None, nar_loss=nar.loss if has_nar else None,
        nar_ce=nar.ce if has_nar else None, nar_scale=nar.scale if has_nar else None,
        nar_stage=nar_stage if has_nar else None, prefix_len=prefix_len if has_nar else None,
        ar_targets=ar.targets if has_ar else 0, nar_targets=nar.targets if has_nar else 0,
        ar_top10_correct=ar.top10_correct if has_ar else 0, nar_top10_correct=nar.top10_correct if has_nar else 0,
        ar_logits=ar.logits if has_ar and keep_logits else None,
        nar_logits=nar.logits if has_nar and keep_logits else None,
    )


@dataclass
class _PaddedBatch:
    """A batch cut to its longest text and utterance, with its padding masks and the AR's shifted targets."""

    text: Tensor  # [B, S] phoneme ids
    text_langs: Tensor  # [B, S] language ids
    text_pad: Tensor  # [B, S] True = padding
    audio_pad: Tensor  # [B, T] True = padding
    codes: Tensor  # [B, T, Q], 0 on padding frames
    code_lens: Tensor  # [B]
    ar_targets: Tensor  # [B, T+1]: codebook 0, then EOS (EOS on every padding frame too)
    eos: int
    bos: int

    @property
    def num_quantizers(self) -> int:
        return int(self.codes.shape[2])

    @classmethod
    def of(cls, batch: TrainingBatch, config: VallexConfig) -> _PaddedBatch:
        text_lens, code_lens = batch.text_lens.long(), batch.code_lens.long()
        if bool((text_lens < 1).any()) or bool((code_lens < 1).any()):
            raise ValueError("Every utterance in a training batch needs at least one text token and one frame.")
        n_q = config.num_quantizers
        if batch.codes.ndim != 3 or batch.codes.shape[2] != n_q:
            raise ValueError(f"codes must have shape [B, T, {n_q}], got {tuple(batch.codes.shape)}.")
        text_len, frames = int(text_lens.max()), int(code_lens.max())
        device = batch.text.device
        audio_pad = torch.arange(frames, device=device)[None] >= code_lens[:, None]  # [B, T]
        codes = batch.codes[:, :frames].long().masked_fill(audio_pad[..., None], 0)  # [B, T, Q]
        eos = config.eos_id
        ar_targets = F.pad(codes[..., 0], (0, 1), value=0) + eos * F.pad(audio_pad.long(), (0, 1), value=1)
        return cls(
            text=batch.text[:, :text_len].long(), text_langs=batch.text_langs[:, :text_len].long(),
            text_pad=torch.arange(text_len, device=device)[None] >= text_lens[:, None],
            audio_pad=audio_pad, codes=codes, code_lens=code_lens, ar_targets=ar_targets, eos=eos,
            bos=config.bos_id,
        )


@dataclass
class _PartLosses:
    """One decoder's summed loss, its target count, its top-10 hits and logits."""

    loss: Tensor
    targets: Tensor  # 0-dim long
    top10_correct: Tensor  # 0-dim long
    logits: Tensor
    ce: Tensor | None = None  # NAR: the cross-entropy before scaling
    scale: float | None = None  # NAR: the scale applied


def _ar_part(model: VallexModel, padded: _PaddedBatch, ar_loss_on_padding: bool) -> _PartLosses:
    """AR: input BOS + codebook 0 shifted right, target codebook 0 + EOS; 1025-way cross-entropy, summed."""
    text, audio_pad, ar_targets = padded.text, padded.audio_pad, padded.ar_targets
    text_len, frames = text.shape[1], audio_pad.shape[1]
    device = text.device
    ar_inputs = F.pad(ar_targets[:, :-1], (1, 0), value=padded.bos)  # [B, T+1]
    xy = torch.cat([model.embed_text("ar", text, padded.text_langs), model.embed_ar_audio(ar_inputs)], dim=1)
    # Text bidirectional, audio causal, padded keys hidden. Every query row still sees its first text
    # token (text_lens >= 1), so no row is fully masked (SDPA would give NaN).
    keys = torch.cat([~padded.text_pad, F.pad(~audio_pad, (1, 0), value=True)], dim=1)  # [B, S+T+1]
    mask = ar_attention_mask(text_len, frames + 1, device=device)[None] & keys[:, None, :]  # [B, L, L]
    hidden = model.ar_decoder(xy, mask[:, None])  # [B, S+T+1, D]
    logits = model.ar_logits(hidden[:, text_len:]).float()  # [B, T+1, 1025]
    targets = ar_targets
    if not ar_loss_on_padding:  # keep frames 0..len (the last one is the EOS target)
        beyond = torch.arange(frames + 1, device=device)[None] > padded.code_lens[:, None]
        targets = ar_targets.masked_fill(beyond, -100)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           reduction="sum", ignore_index=-100)
    return _PartLosses(loss=loss, targets=(targets >= 0).sum(),
                       top10_correct=_top10_hits(logits, targets, ignore=padded.eos), logits=logits)


def _nar_part(model: VallexModel, padded: _PaddedBatch, nar_stage: int, prefix_len: int,
              nar_scale: float | None) -> _PartLosses:
    """NAR stage ``nar_stage``: predict that codebook on the frames after the prompt, from the codebooks below."""
    eos = padded.eos
    if nar_scale is None:
        nar_scale = nar_loss_scale(int(padded.code_lens.sum()), prefix_len, padded.text.shape[0])
    q0 = padded.ar_targets[:, :-1]  # [B, T]: codebook 0 with EOS on padding frames (as the AR reads it)
    codes = torch.cat([q0[..., None], padded.codes[..., 1:]], dim=-1)  # [B, T, Q]
    audio_emb = model.embed_nar_audio(codes, prefix_len, nar_stage)  # [B, T, D]: the prompt carries all codebooks
    padding = torch.cat([padded.text_pad, padded.audio_pad], dim=1)  # [B, S+T]
    text_emb = model.embed_text("nar", padded.text, padded.text_langs)
    hidden = model.nar_forward(text_emb, audio_emb, nar_stage - 1, padding)  # [B, S+T, D]
    logits = model.nar_predict_layers[nar_stage - 1](hidden[:, prefix_len:]).float()  # [B, T-P, 1024]
    # [B, T-P]; EOS (1024) on padding frames is ignored.
    targets = (padded.codes[..., nar_stage] + eos * padded.audio_pad.long())[:, prefix_len:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=eos,
                         reduction="sum")
    return _PartLosses(loss=ce * nar_scale, targets=(targets != eos).sum(),
                       top10_correct=_top10_hits(logits, targets, ignore=eos), logits=logits, ce=ce, scale=nar_scale)

