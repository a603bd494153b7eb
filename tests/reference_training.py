"""An independent oracle of the reference training forward, for differential tests of ours.

The golden ``train.json`` follows lifeiteng/vall-e ``VALLE.forward`` applied to the reference model, with the
language embedding added to the AR and NAR text embeddings right after the token embedding. This module
rebuilds that model from torch's own ``nn.MultiheadAttention`` (the class the reference's attention copies:
packed ``in_proj_weight``, ``key_padding_mask``, ``need_weights=False``) and ``nn.LayerNorm``, loads our
model's state dict into it with ``strict=True`` (the reference's keys), and runs the forward line for line:
``[text ; audio]`` sequences padded to the longest item, an additive ``-inf`` AR mask merged with the key
padding, a boolean key-padding mask in the NAR, prefix-mode-1 prompts, losses summed.

It shares no code with ``vallex.model`` or ``vallex.training.forward``, so where both agree on a batch (losses
and every gradient), ours computes the reference's definition on that batch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _Norm(nn.Module):
    """The reference's LayerNorm (``adaptive=False``) or AdaptiveLayerNorm (``w ⊙ LN(x) + b``)."""

    def __init__(self, dim: int, adaptive: bool) -> None:
        super().__init__()
        self.adaptive = adaptive
        if adaptive:
            self.project_layer = nn.Linear(dim, 2 * dim)
            self.norm = nn.LayerNorm(dim)
        else:
            self.weight = nn.Parameter(torch.ones(dim))
            self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor, stage: Tensor | None) -> Tensor:
        if not self.adaptive:
            return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, 1e-5)
        weight, bias = torch.split(self.project_layer(stage), x.shape[-1], dim=-1)
        return weight * self.norm(x) + bias


class _Layer(nn.Module):
    """Pre-norm encoder layer: ``x + SA(norm1(x)); x + FFN(norm2(x))``."""

    def __init__(self, dim: int, heads: int, adaptive: bool) -> None:
        super().__init__()
        # dropout=0.1 as in the reference (inactive in eval); it also keeps torch off the fused fast path.
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=0.1, batch_first=True)
        self.linear1 = nn.Linear(dim, 4 * dim)
        self.linear2 = nn.Linear(4 * dim, dim)
        self.norm1 = _Norm(dim, adaptive)
        self.norm2 = _Norm(dim, adaptive)

    def forward(self, x: Tensor, stage: Tensor | None, attn_mask: Tensor | None,
                key_padding_mask: Tensor | None) -> Tensor:
        h = self.norm1(x, stage)
        x = x + self.self_attn(h, h, h, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                               need_weights=False)[0]
        return x + self.linear2(F.relu(self.linear1(self.norm2(x, stage))))


class _Decoder(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int, adaptive: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_Layer(dim, heads, adaptive) for _ in range(layers))
        self.norm = _Norm(dim, adaptive)

    def forward(self, x, stage=None, attn_mask=None, key_padding_mask=None):
        for layer in self.layers:
            x = layer(x, stage, attn_mask, key_padding_mask)
        return self.norm(x, stage)


class _Position(nn.Module):
    """``x + alpha * PE`` (the reference's SinePositionalEmbedding with scale=False)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1))
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        position = torch.arange(0, x.shape[1], dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, self.dim, 2, dtype=torch.float32) * -(math.log(10000.0) / self.dim))
        pe = torch.zeros(x.shape[1], self.dim)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div)
        return x + self.alpha * pe.to(x.dtype)


def _embedding(rows: int, dim: int) -> nn.Module:
    module = nn.Module()
    module.word_embeddings = nn.Embedding(rows, dim)
    return module


class ReferenceVALLE(nn.Module):
    """The reference model's modules under the reference's state-dict keys (load ours with strict=True)."""

    def __init__(self, d_model: int, nhead: int, num_layers: int, num_quantizers: int = 8,
                 text_rows: int = 2048, audio_rows: int = 1024, languages: int = 3) -> None:
        super().__init__()
        self.num_quantizers, self.num_heads, self.eos = num_quantizers, nhead, audio_rows
        self.ar_text_embedding = _embedding(text_rows, d_model)
        self.nar_text_embedding = _embedding(text_rows, d_model)
        self.ar_audio_embedding = _embedding(audio_rows + 2, d_model)
        self.ar_text_position = _Position(d_model)
        self.ar_audio_position = _Position(d_model)
        self.ar_decoder = _Decoder(d_model, nhead, num_layers, adaptive=False)
        self.ar_predict_layer = nn.Linear(d_model, audio_rows + 1, bias=False)
        self.nar_audio_embeddings = nn.ModuleList(
            [_embedding(audio_rows + 1, d_model)]
            + [_embedding(audio_rows, d_model) for _ in range(num_quantizers - 1)])
        self.nar_text_position = _Position(d_model)
        self.nar_audio_position = _Position(d_model)
        self.nar_decoder = _Decoder(d_model, nhead, num_layers, adaptive=True)
        self.nar_predict_layers = nn.ModuleList(
            nn.Linear(d_model, audio_rows, bias=False) for _ in range(num_quantizers - 1))
        self.nar_stage_embeddings = nn.ModuleList(_embedding(1, d_model) for _ in range(num_quantizers - 1))
        self.ar_language_embedding = _embedding(languages, d_model)
        self.nar_language_embedding = _embedding(languages, d_model)
        for j in range(num_quantizers - 2):  # share_embedding=True
            self.nar_predict_layers[j].weight = self.nar_audio_embeddings[j + 2].word_embeddings.weight

    def forward(self, x: Tensor, x_lens: Tensor, y: Tensor, y_lens: Tensor, lang_ids: Tensor,
                nar_stage: int, prefix_len: int) -> dict[str, Tensor]:
        """x [B, S] (padded), y [B, T, 8], lang_ids [B, S] -> losses, train_stage 0, reduction "sum"."""
        eos, bos = self.eos, self.eos + 1
        x_len, y_len = int(x_lens.max()), int(y_lens.max())
        x_mask = torch.arange(x_len)[None] >= x_lens[:, None]  # make_pad_mask
        y_mask = torch.arange(y_len)[None] >= y_lens[:, None]
        y_mask_int = y_mask.long()
        codes = y.long() * (1 - y_mask_int.unsqueeze(-1))
        targets = F.pad(codes[..., 0], (0, 1), value=0) + eos * F.pad(y_mask_int, (0, 1), value=1)
        y_in = F.pad(targets[:, :-1], (1, 0), value=bos)  # pad_y_eos with prepend_bos
        xy_padding_mask = torch.cat([x_mask, y_mask], dim=1)
        ar_padding_mask = torch.cat([x_mask, F.pad(y_mask, (1, 0), value=False)], dim=1)

        # AR
        text = self.ar_text_embedding.word_embeddings(x) + self.ar_language_embedding.word_embeddings(lang_ids)
        text = self.ar_text_position(text)
        ar_len = y_len + 1
        x_attn = F.pad(torch.zeros(x_len, x_len, dtype=torch.bool), (0, ar_len), value=True)
        y_attn = F.pad(torch.triu(torch.ones(ar_len, ar_len, dtype=torch.bool), diagonal=1), (x_len, 0), value=False)
        attn = torch.cat([x_attn, y_attn], dim=0)
        batch, total = x.shape[0], x_len + ar_len
        padding = ar_padding_mask.view(batch, 1, 1, total).expand(-1, self.num_heads, -1, -1).reshape(
            batch * self.num_heads, 1, total)
        attn = torch.zeros(attn.logical_or(padding).shape).masked_fill_(attn.logical_or(padding), float("-inf"))
        audio = self.ar_audio_position(self.ar_audio_embedding.word_embeddings(y_in))
        hidden = self.ar_decoder(torch.cat([text, audio], dim=1), attn_mask=attn)
        logits = self.ar_predict_layer(hidden[:, x_len:]).permute(0, 2, 1)
        ar_loss = F.cross_entropy(logits, targets, reduction="sum")

        # NAR, prefix mode 1
        y0 = y_in[:, 1:]
        text = self.nar_text_embedding.word_embeddings(x) + self.nar_language_embedding.word_embeddings(lang_ids)
        text = self.nar_text_position(text)
        emb = [e.word_embeddings for e in self.nar_audio_embeddings]
        prompts = emb[0](y0[:, :prefix_len])
        rest = emb[0](y0[:, prefix_len:])
        for j in range(1, self.num_quantizers):
            prompts = prompts + emb[j](codes[:, :prefix_len, j])
            if j < nar_stage:
                rest = rest + emb[j](codes[:, prefix_len:, j])
        audio = self.nar_audio_position(torch.cat([prompts, rest], dim=1))
        stage = self.nar_stage_embeddings[nar_stage - 1].word_embeddings.weight
        hidden = self.nar_decoder(torch.cat([text, audio], dim=1), stage, key_padding_mask=xy_padding_mask)
        hidden = hidden[:, x_len + prefix_len:]
        logits = self.nar_predict_layers[nar_stage - 1](hidden).permute(0, 2, 1)
        nar_targets = (codes[..., nar_stage] + eos * y_mask_int)[:, prefix_len:]
        total_length = y_lens.sum().float()
        nar_scale = total_length / (total_length - prefix_len * batch)
        nar_loss = F.cross_entropy(logits, nar_targets, ignore_index=eos, reduction="sum") * nar_scale
        return {"ar_loss": ar_loss, "nar_loss": nar_loss, "total_loss": (ar_loss + nar_loss) / 2}
