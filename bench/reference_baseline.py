"""The reference implementation's inference algorithm, run on our model's weights: the benchmark's baseline.

Benchmark code only (the library never imports it). It answers "is our float32 path faster or slower
than the reference *on this machine*", which the reference's numbers from another machine cannot. It runs
:class:`vallex.model.VallexModel`'s float32 parameters through the reference's inference loop
(Plachtaa/VALL-E-X ``VALLE.inference``, ``TransformerEncoder.infer``,
``modules.activation.multi_head_attention_forward``), keeping its costs:

* every AR step re-embeds the whole audio prefix ``[BOS ; prompt ; generated]``, re-adds its positional
  encoding and concatenates it after the text, rebuilds the whole ``(X+Y)²`` boolean mask, and only then
  keeps the last position (``xy_pos[:, [-1]]``);
* each layer's keys and values grow by ``torch.cat`` every step;
* AR attention is written out by hand: ``(q @ kᵀ) * 1/sqrt(hd)``, ``masked_fill(mask[-T:], -inf)``,
  softmax, ``@ v`` (no ``scaled_dot_product_attention``);
* the prefill runs every position through every layer and the final norm (no last-layer trimming);
* NAR stages run the layers' ordinary forward: ``torch.nn.functional.multi_head_attention_forward`` over
  all text + audio positions (the reference's ``nn.MultiheadAttention`` subclass never takes the fused
  fast path because its dropout is 0.1), the whole sequence through the last layer and final norm, and
  the logits cut afterwards;
* sampling is the reference's ``topk_sampling``: filtering, ``multinomial(softmax)``, ``log_softmax`` of
  the whole row;
* every large Linear goes through ``F.linear`` (torch's default CPU kernel: MKL on x86), as the
  reference's ``nn.Linear`` does, where our inference uses oneDNN's float32 kernel
  (:class:`vallex.inference.kernels.OneDNNFloat32Linear`).

Gradients are off with ``torch.no_grad`` as in the reference's ``generate_audio`` (ours runs under
``inference_mode``). Only eval-mode no-ops are left out (``nn.Dropout`` calls, ``nn.Identity`` prenets);
``x * 1.0`` of ``scale=False`` is kept because it is a real tensor op. The reference's per-stop ``print``
is left out. Two additions, both off by default, let the benchmark force a length exactly as
:func:`vallex.inference.ar.ar_decode` does: ``min_frames`` masks the EOS logit until that many frames exist,
``max_frames`` replaces the reference's 16 x text-length stop rule.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# The reference's stop rule (at most 16 generated frames per text token) is ours too.
from vallex.inference.ar import MAX_FRAMES_PER_TEXT_TOKEN
from vallex.model import DecoderLayer, SinePositionalEmbedding, VallexModel

LayerKV = tuple[Tensor, Tensor]  # keys, values [B, H, L, hd]


def reference_generate(
    model: VallexModel,
    text: Tensor,
    text_langs: Tensor,
    prompt_codes: Tensor,
    **ar_options,
) -> Tensor:
    """AR then NAR exactly as the reference runs them.

    Args:
        text, text_langs: LongTensor [1, S] (prompt transcript ++ target ids; language id per token).
        prompt_codes: LongTensor [1, P, 8] (P may be 0).
        ar_options: see :func:`reference_ar`.
    Returns:
        codes LongTensor [1, T, 8] of the generated frames.
    """
    codes0, _ = reference_ar(model, text, text_langs, prompt_codes[..., 0], **ar_options)
    return reference_nar(model, text, text_langs, prompt_codes, codes0)


@torch.no_grad()  # as the reference's generate_audio
def reference_ar(
    model: VallexModel,
    text: Tensor,
    text_langs: Tensor,
    prompt_codes0: Tensor,
    *,
    top_k: int = -100,
    top_p: float = 1.0,
    temperature: float = 1.0,
    best_of: int = 1,
    length_penalty: float = 1.0,
    min_frames: int = 0,
    max_frames: int | None = None,
    generator: torch.Generator | None = None,
    on_step: Callable[[int], None] | None = None,
) -> tuple[Tensor, int]:
    """The reference's AR loop (``VALLE.inference``, first half).

    Args:
        text, text_langs: LongTensor [1, S].
        prompt_codes0: LongTensor [1, P], codebook 0 of the prompt.
        top_k, top_p, temperature: the reference's ``topk_sampling`` (its defaults: no filtering).
        best_of, length_penalty: rows sampled in parallel; the row with the best mean log-prob wins (the
            reference's length counts BOS and prompt tokens; kept).
        min_frames: benchmark only: EOS masked until this many frames exist (0 = the reference).
        max_frames: benchmark only: stop after this many frames (default 16 x S, the reference's rule).
        on_step: called with the decoder-call index after each call's logits exist (0 = the prefill).
    Returns:
        (codes LongTensor [1, T] of codebook 0, number of decoder calls).
    """
    _check_float32(model)
    cfg = model.config
    eos, bos = cfg.eos_id, cfg.bos_id
    if max_frames is None:
        max_frames = MAX_FRAMES_PER_TEXT_TOKEN * text.shape[1]
    device = text.device
    prompt_len = prompt_codes0.shape[1]

    x = model.ar_text_embedding(text)  # [1, S, D]
    x += model.ar_language_embedding(text_langs)
    x = _add_positions(model.ar_text_position, x)

    y = F.pad(prompt_codes0.long(), (1, 0), value=bos)  # [1, 1 + P]
    x_len = x.shape[1]
    x_attn_mask = torch.zeros((x_len, x_len), dtype=torch.bool)  # on the host, as the reference builds it

    kv_cache: list[LayerKV] | None = None
    sum_logprobs = torch.zeros(best_of, device=device)
    x = x.repeat(best_of, 1, 1)  # [B, S, D]
    y = y.repeat(best_of, 1)  # [B, 1 + P]
    calls = 0
    while True:
        # The whole audio prefix is embedded and positioned again every step, as in the reference.
        y_pos = _add_positions(model.ar_audio_position, model.ar_audio_embedding(y))  # [B, Y, D]
        xy_pos = torch.concat([x, y_pos], dim=1)  # [B, S + Y, D]
        y_len = y.shape[1]
        # True = may NOT attend (the reference's convention): text never sees audio, audio is causal.
        x_attn_mask_pad = F.pad(x_attn_mask, (0, y_len), value=True)  # [S, S + Y]
        y_attn_mask = F.pad(torch.triu(torch.ones(y_len, y_len, dtype=torch.bool), diagonal=1),
                            (x_len, 0), value=False)  # [Y, S + Y]
        xy_attn_mask = torch.concat([x_attn_mask_pad, y_attn_mask], dim=0).to(device)  # [S+Y, S+Y]
        if kv_cache is not None:
            xy_pos = xy_pos[:, [-1]]  # [B, 1, D]

        xy_dec, kv_cache = _ar_decoder_infer(model, xy_pos, xy_attn_mask, kv_cache)
        logits = F.linear(xy_dec[:, -1], model.ar_predict_layer.weight)  # [B, 1025]
        calls += 1
        if on_step is not None:
            on_step(calls - 1)
        if y_len - 1 - prompt_len < min_frames:
            logits[:, eos] = float("-inf")
        samples, current_logprobs = topk_sampling(logits, top_k=top_k, top_p=top_p, temperature=temperature,
                                                  generator=generator)  # [B, 1], [B]
        sum_logprobs += current_logprobs * (y[:, -1] != eos)
        samples[y[:, -1] == eos] = eos
        completed = (samples[:, -1] == eos).all()
        if completed or (y.shape[1] - prompt_len) > max_frames:
            lengths = torch.sum(y != eos, dim=1)
            avg_logprobs = sum_logprobs / lengths**length_penalty
            best_beam = y[torch.argmax(avg_logprobs), :]
            y = best_beam[best_beam != eos].unsqueeze(0)
            break
        y = torch.concat([y, samples], dim=1)
    return y[:, prompt_len + 1:], calls


@torch.no_grad()  # as the reference's generate_audio
def reference_nar(
    model: VallexModel, text: Tensor, text_langs: Tensor, prompt_codes: Tensor, codes0: Tensor
) -> Tensor:
    """The reference's NAR stages, prefix mode 1 (``VALLE.inference``, second half): greedy codebooks 1..7.

    text, text_langs: LongTensor [1, S]; prompt_codes: LongTensor [1, P, 8]; codes0: LongTensor [1, T].
    Returns codes LongTensor [1, T, 8].
    """
    _check_float32(model)
    n_q = model.config.num_quantizers
    prefix_len = prompt_codes.shape[1]
    text_len = text.shape[1]
    codes = [codes0.long()]
    y_emb = model.nar_audio_embeddings[0](torch.cat([prompt_codes[..., 0].long(), codes0.long()], dim=1))

    x = model.nar_text_embedding(text)  # [1, S, D]
    x += model.nar_language_embedding(text_langs)
    x = _add_positions(model.nar_text_position, x)

    for j in range(1, n_q):
        y_emb[:, :prefix_len] += model.nar_audio_embeddings[j](prompt_codes[..., j].long())
    for i in range(n_q - 1):
        y_pos = _add_positions(model.nar_audio_position, y_emb)
        xy_pos = torch.concat([x, y_pos], dim=1)  # [1, S + P + T, D]
        xy_dec = _nar_decoder_forward(model, xy_pos, model.nar_stage_embeddings[i].weight)
        logits = F.linear(xy_dec[:, text_len + prefix_len:], model.nar_predict_layers[i].weight)  # [1, T, 1024]
        samples = torch.argmax(logits, dim=-1)  # [1, T]
        codes.append(samples)
        if i < n_q - 2:
            y_emb[:, prefix_len:] += model.nar_audio_embeddings[i + 1](samples)
    return torch.stack(codes, dim=-1)


def topk_sampling(
    logits: Tensor,
    *,
    top_k: int = 10,
    top_p: float = 1.0,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """The reference's sampler: logits [B, V] -> (tokens [B, 1], log-probs of them [B])."""
    if temperature != 1.0:
        logits = logits / temperature
    logits = _top_k_top_p_filtering(logits, top_k=top_k, top_p=top_p)
    token = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1, generator=generator)
    logprobs = F.log_softmax(logits.float(), dim=-1)
    return token, logprobs[torch.arange(logprobs.shape[0]), token.squeeze(1)]


def _top_k_top_p_filtering(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """In place, as the reference: below the k-th largest -> -inf; outside the top-p nucleus -> -inf."""
    if top_k > 0:
        top_k = min(top_k, logits.size(-1))
        logits[logits < torch.topk(logits, top_k)[0][..., -1, None]] = float("-inf")
    if top_p < 1.0:
        sorted_logits, sorted_indices = torch.sort(logits, descending=True)
        cumulative_probs = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        sorted_remove = cumulative_probs > top_p
        sorted_remove[..., 1:] = sorted_remove[..., :-1].clone()
        sorted_remove[..., 0] = False
        logits[sorted_remove.scatter(1, sorted_indices, sorted_remove)] = float("-inf")
    return logits


# Decoders ----------------------------------------------------------------------------------------------
def _add_positions(position: SinePositionalEmbedding, x: Tensor) -> Tensor:
    """``x * x_scale + alpha * PE[:T]`` with x_scale = 1.0 (scale=False), as the reference computes it."""
    pe = position.table(x.shape[1], x.device, x.dtype)  # [T, D], the same float32 sinusoid table
    return x * 1.0 + position.alpha * pe


def _ar_decoder_infer(
    model: VallexModel, x: Tensor, mask: Tensor, past_kv: list[LayerKV] | None
) -> tuple[Tensor, list[LayerKV]]:
    """``TransformerEncoder.infer``: x [B, T, D] (all positions, or the newest one with a cache)."""
    past = [None] * len(model.ar_decoder.layers) if past_kv is None else past_kv
    new_kv = []
    for layer, layer_past in zip(model.ar_decoder.layers, past):
        attn_out, kv = _ar_attention(layer, layer.norm1(x), mask, layer_past)
        x = x + attn_out
        x = x + _feed_forward(layer, layer.norm2(x))
        new_kv.append(kv)
    return model.ar_decoder.norm(x), new_kv  # final norm over every position given


def _ar_attention(layer: DecoderLayer, x: Tensor, mask: Tensor, past: LayerKV | None) -> tuple[Tensor, LayerKV]:
    """``modules.activation.multi_head_attention_forward``: x [B, T, C] -> ([B, T, C], (k, v) grown by T)."""
    attn = layer.self_attn
    batch, length, channels = x.shape
    n_head = attn.num_heads
    q, k, v = F.linear(x, attn.in_proj.weight, attn.in_proj.bias).chunk(3, dim=-1)
    k = k.view(batch, length, n_head, channels // n_head).transpose(1, 2)  # [B, H, T, hd]
    q = q.view(batch, length, n_head, channels // n_head).transpose(1, 2)
    v = v.view(batch, length, n_head, channels // n_head).transpose(1, 2)
    if past is not None:
        k = torch.cat((past[0], k), dim=-2)  # a new [B, H, L, hd] tensor every step, as in the reference
        v = torch.cat((past[1], v), dim=-2)
    full_length = k.shape[-2]
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # [B, H, T, L]
    att = att.masked_fill(mask[full_length - length:full_length, :full_length], float("-inf"))
    att = F.softmax(att, dim=-1)
    y = (att @ v).transpose(1, 2).contiguous().view(batch, length, channels)
    return F.linear(y, attn.out_proj.weight, attn.out_proj.bias), (k, v)


def _nar_decoder_forward(model: VallexModel, x: Tensor, stage: Tensor) -> Tensor:
    """``TransformerEncoder.forward`` of the NAR: x [1, L, D], stage embedding [1, D] -> [1, L, D]."""
    for layer in model.nar_decoder.layers:
        h = layer.norm1(x, stage).transpose(1, 0)  # batch_first module: [L, B, D] for the functional call
        attn = layer.self_attn
        attn_out, _ = F.multi_head_attention_forward(
            h, h, h, h.shape[-1], attn.num_heads, attn.in_proj.weight, attn.in_proj.bias, None, None, False,
            0.1, attn.out_proj.weight, attn.out_proj.bias, training=False, key_padding_mask=None,
            need_weights=False, attn_mask=None, average_attn_weights=True,
        )
        x = x + attn_out.transpose(1, 0)
        x = x + _feed_forward(layer, layer.norm2(x, stage))
    return model.nar_decoder.norm(x, stage)


def _feed_forward(layer: DecoderLayer, x: Tensor) -> Tensor:
    """``linear2(relu(linear1(x)))``, out of place as the reference's ``_ff_block``, through ``F.linear``
    (torch's default kernel, as the reference's nn.Linear) rather than our oneDNN float32 path."""
    hidden = F.relu(F.linear(x, layer.linear1.weight, layer.linear1.bias))
    return F.linear(hidden, layer.linear2.weight, layer.linear2.bias)


def _check_float32(model: VallexModel) -> None:
    weight = getattr(model.ar_decoder.layers[0].self_attn.in_proj, "weight", None)  # int8/prepacked: none
    if not isinstance(weight, Tensor) or weight.dtype != torch.float32:
        raise ValueError("The reference baseline runs float32 only (the reference has no other precision); "
                         "load the model without apply_precision or with precision 'float32'.")
