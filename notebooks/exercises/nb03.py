"""Notebook 3's exercises (the model): the AR's attention mask, the NAR's summed input, the AR's factorisation.

Each check compares the learner's function with the library (:mod:`vallex.model`) on a tiny random model, in well
under a second.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
from torch import Tensor

from vallex.config import VallexConfig
from vallex.model import VallexModel, ar_attention_mask

# Exercise "ar_mask": build the AR decoder's attention mask over [text ; audio] ------------------------------

#: (text tokens, audio positions) pairs the mask is checked on: empty parts and a square, too.
MASK_SHAPES = ((1, 1), (3, 5), (5, 3), (4, 0), (0, 4), (7, 9))


def stub_ar_mask(text_len: int, audio_len: int) -> Tensor:
    """As the notebook ships it: every position may attend to every other (that is the NAR's mask, not the AR's)."""
    total = text_len + audio_len
    return torch.ones(total, total, dtype=torch.bool)


def answer_ar_mask(text_len: int, audio_len: int) -> Tensor:
    """Bool [S+T, S+T], True = may attend: text sees all the text; audio sees all the text and audio up to itself."""
    total = text_len + audio_len
    mask = torch.zeros(total, total, dtype=torch.bool)
    mask[:, :text_len] = True  # every query sees the whole text
    audio = torch.ones(audio_len, audio_len, dtype=torch.bool).tril()  # audio query i sees audio keys 0..i
    mask[text_len:, text_len:] = audio
    return mask


def _position_name(index: int, text_len: int) -> str:
    return f"text t{index}" if index < text_len else f"audio a{index - text_len}"


def check_ar_mask(ar_mask: Callable[[int, int], Tensor]) -> str | None:
    """``ar_mask(S, T)`` must equal :func:`vallex.model.ar_attention_mask` for every shape of :data:`MASK_SHAPES`."""
    for text_len, audio_len in MASK_SHAPES:
        got = torch.as_tensor(ar_mask(text_len, audio_len))
        want = ar_attention_mask(text_len, audio_len)
        if tuple(got.shape) != tuple(want.shape):
            return (f"for S={text_len}, T={audio_len} the mask has shape {tuple(got.shape)}, "
                    f"expected {tuple(want.shape)}.")
        wrong = (got.bool() != want).nonzero()
        if len(wrong):
            row, column = (int(i) for i in wrong[0])
            return (f"for S={text_len}, T={audio_len}, query {_position_name(row, text_len)} -> key "
                    f"{_position_name(column, text_len)} should be {bool(want[row, column])} "
                    f"({len(wrong)} of {want.numel()} entries differ).")
    return None


# Exercise "nar_input": the NAR's summed audio embedding for the stage predicting codebook j --------------------

@lru_cache(maxsize=1)
def _tiny_model() -> VallexModel:
    torch.manual_seed(0)
    return VallexModel(VallexConfig.tiny()).eval()


def stub_nar_input(model: VallexModel, codes: Tensor, prompt_frames: int, j: int) -> Tensor:
    """As the notebook ships it: only codebook 0's embedding, for every frame and every stage."""
    return model.nar_audio_embeddings[0](codes[..., 0])


def answer_nar_input(model: VallexModel, codes: Tensor, prompt_frames: int, j: int) -> Tensor:
    """codes LongTensor [1, T, 8] -> [1, T, D]: prompt frames sum all 8 codebook embeddings, the others codebooks
    0..j-1 (j: the codebook this stage predicts, 1..7)."""
    x = torch.zeros(*codes.shape[:2], model.config.d_model)
    for k in range(codes.shape[-1]):
        e = model.nar_audio_embeddings[k](codes[..., k])  # [1, T, D]
        if k < j:
            x = x + e  # codebooks the target frames already have
        else:
            x[:, :prompt_frames] = x[:, :prompt_frames] + e[:, :prompt_frames]  # the prompt has all eight
    return x


def check_nar_input(nar_input: Callable[[VallexModel, Tensor, int, int], Tensor]) -> str | None:
    """``nar_input`` must equal ``VallexModel.embed_nar_audio`` on random codes, for every stage j = 1..7."""
    model = _tiny_model()
    codes = torch.randint(0, 1024, (1, 12, 8), generator=torch.Generator().manual_seed(3))
    prompt_frames = 5
    with torch.inference_mode():
        for j in range(1, 8):
            got = nar_input(model, codes, prompt_frames, j)
            want = model.embed_nar_audio(codes, prompt_frames, j)
            if tuple(got.shape) != tuple(want.shape):
                return f"for j={j} the result has shape {tuple(got.shape)}, expected {tuple(want.shape)}."
            if not torch.allclose(got, want, atol=1e-5):
                frames = (got - want).abs().amax(-1)[0] > 1e-5
                where = "prompt" if bool(frames[:prompt_frames].any()) else "target"
                return (f"for j={j} the {where} frames differ from model.embed_nar_audio "
                        f"({int(frames.sum())} of {codes.shape[1]} frames wrong).")
    return None


# Exercise "ar_log_likelihood": the AR's product over frames, from one masked pass --------------------------

def stub_ar_log_likelihood(model: VallexModel, text: Tensor, langs: Tensor, prompt0: Tensor,
                           target0: Tensor) -> float:
    """As the notebook ships it: every code counted as 1 in 1025, whatever the model says."""
    return -len(target0[0]) * float(torch.log(torch.tensor(1025.0)))


def answer_ar_log_likelihood(model: VallexModel, text: Tensor, langs: Tensor, prompt0: Tensor,
                             target0: Tensor) -> float:
    """log p(c_{:,1} | x, C~_{:,1}) = sum over target frames t of log p(c_{t,1} | c_{<t,1}, C~_{:,1}, x), in nats.

    text, langs [1, S]; prompt0 [1, P] and target0 [1, T]: codebook 0 of the prompt and of the target.
    """
    audio_in = torch.cat([torch.tensor([[model.config.bos_id]]), prompt0, target0[:, :-1]], dim=1)  # [1, 1+P+T-1]
    x = torch.cat([model.embed_text("ar", text, langs), model.embed_ar_audio(audio_in)], dim=1)
    hidden = model.ar_decoder(x, ar_attention_mask(text.shape[1], audio_in.shape[1]))
    logp = model.ar_logits(hidden[:, text.shape[1] + prompt0.shape[1]:]).log_softmax(-1)  # [1, T, 1025]
    return float(logp.gather(-1, target0[..., None]).sum())


def check_ar_log_likelihood(ar_log_likelihood: Callable[..., float]) -> str | None:
    """The learner's log-likelihood must equal the sum of T separate next-frame predictions, each recomputed from
    the truncated sequence alone (no mask needed there: the last position is the one read)."""
    model = _tiny_model()
    g = torch.Generator().manual_seed(4)
    text = torch.randint(0, 70, (1, 6), generator=g)
    langs = torch.zeros_like(text)
    prompt0, target0 = torch.randint(0, 1024, (1, 4), generator=g), torch.randint(0, 1024, (1, 5), generator=g)
    with torch.inference_mode():
        truth = 0.0
        for t in range(target0.shape[1]):  # one factor of the product at a time
            audio_in = torch.cat([torch.tensor([[model.config.bos_id]]), prompt0, target0[:, :t]], dim=1)
            x = torch.cat([model.embed_text("ar", text, langs), model.embed_ar_audio(audio_in)], dim=1)
            hidden = model.ar_decoder(x, ar_attention_mask(text.shape[1], audio_in.shape[1]))
            truth += float(model.ar_logits(hidden[:, -1]).log_softmax(-1)[0, target0[0, t]])
        got = float(ar_log_likelihood(model, text, langs, prompt0, target0))
    if abs(got - truth) > 1e-3:
        return f"got {got:.4f} nats, expected {truth:.4f} (the sum of the 5 frames' log-probabilities)."
    return None
