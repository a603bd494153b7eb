# %% [markdown]
# # 3. The model: an autoregressive and a non-autoregressive decoder
#
# VALL-E X (Zhang et al. 2023, [arXiv 2303.03926](https://arxiv.org/abs/2303.03926)) treats speech
# synthesis as **language modelling over audio codec tokens**. It keeps the architecture of VALL-E
# (Wang et al. 2023, [arXiv 2301.02111](https://arxiv.org/abs/2301.02111), §4) and makes it multilingual
# (VALL-E X §3): one sequence holds the *phonemes* of the text and the *EnCodec codes* of the speech, and
# two transformer decoders read it:
#
# | decoder | predicts | attention | why |
# |---|---|---|---|
# | **AR** (autoregressive) | codebook 0, one frame at a time | text bidirectional, audio causal | codebook 0 carries most of the content and the timing; sampling it frame by frame lets the model decide the length and the prosody |
# | **NAR** (non-autoregressive) | codebooks 1..7, one *whole codebook* per stage | full, in both directions | the finer codebooks only refine the sound of frames that already exist, so all frames can be predicted at once: 7 passes instead of 7 × T |
#
# This notebook takes the model apart: its sizes and where the 370 M parameters sit, the input sequence,
# what each decoder knows and predicts at each step, the attention masks, one decoder layer written by hand
# (attention and feed-forward, checked against the library), where the **language ID** enters (the VALL-E X
# addition, §3), and the NAR **stage embeddings** with adaptive layer norm.
#
# > **Runs offline with random weights.** Everything here is about structure: shapes, masks and parameter
# > counts do not depend on the weight values, so a tiny randomly initialised model (`VallexConfig.tiny()`)
# > shows it all in a few seconds. The full-size model is only ever built on PyTorch's `meta` device (shapes,
# > no memory). If `VALLEX_WEIGHTS_DIR` points at a folder with the real checkpoint, the last section loads
# > it and looks at the trained language and stage embeddings.
#
# The code is in `vallex/model.py` (one file, read it top to bottom) and `vallex/inference/` (`ar.py`, `nar.py`,
# `sampling.py`); this notebook only imports it.

# %%
import os

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from tutorial import draw_token_grid, show, token_grid_legend, token_states

from vallex.config import VallexConfig
from vallex.inference.generation import language_ids
from vallex.languages import MODEL_LANGUAGE_ID
from vallex.model import VallexModel, ar_attention_mask, count_parameters
from vallex.text import tokenize

torch.set_num_threads(1)  # small ops are fastest (and never stall) on one thread
torch.manual_seed(0)


# %% [markdown]
# ## 3.1 Two sizes of the same model
#
# `VallexConfig.public()` is the shape of the public checkpoint (`Plachta/VALL-E-X`): 12 layers of width
# 1024 with 16 heads in *each* decoder. `VallexConfig.tiny()` keeps every structural choice and shrinks the
# widths, so the tutorials and tests run on a laptop CPU.

# %%
public, tiny = VallexConfig.public(), VallexConfig.tiny()
for name in ("d_model", "nhead", "num_layers", "num_quantizers", "text_vocab_size", "audio_vocab_size",
             "num_languages", "ff_multiplier"):
    print(f"{name:18s} public={getattr(public, name):5d}   tiny={getattr(tiny, name):5d}")
print(f"special audio ids: EOS={public.eos_id} (AR output), BOS={public.bos_id} (AR input only)")

# %% [markdown]
# ## 3.2 Where the 370 M parameters sit
#
# We build the full model on the `meta` device: PyTorch creates every parameter's shape and dtype but
# allocates no memory, so counting is instant. Six of the NAR output layers share their weight with NAR
# input embeddings (the reference's `share_embedding=True`), so a shared tensor is counted once, under the
# first name that owns it.

# %%
with torch.device("meta"):
    full = VallexModel(public)


def part_of(name: str) -> str:
    """Group a parameter name into a readable part of the model."""
    if name.startswith("ar_decoder"):
        return "AR decoder"
    if name.startswith("nar_decoder"):
        return "NAR decoder: adaptive norms" if "project_layer" in name else "NAR decoder: attention + FFN + norms"
    if "text_embedding" in name:
        return "text embeddings (AR + NAR)"
    if "audio_embedding" in name:
        return "audio embeddings (AR + NAR)"
    if "predict_layer" in name:
        return "output heads (untied)"
    if "language_embedding" in name:
        return "language embeddings"
    if "stage_embeddings" in name:
        return "NAR stage embeddings"
    return "positional scales (alpha)"


parts: dict[str, int] = {}
for name, parameter in full.named_parameters():  # shared tensors are listed once (first owner)
    parts[part_of(name)] = parts.get(part_of(name), 0) + parameter.numel()
total = count_parameters(full)
assert sum(parts.values()) == total
for part, count in sorted(parts.items(), key=lambda item: -item[1]):
    print(f"{part:40s} {count:>12,d}  {100 * count / total:5.1f} %")
print(f"{'total (unique)':40s} {total:>12,d}  = {total * 4 / 1e9:.2f} GB in float32")
ar_layer, nar_layer = count_parameters(full.ar_decoder.layers[0]), count_parameters(full.nar_decoder.layers[0])
print(f"\none AR layer: {ar_layer:,d}   one NAR layer: {nar_layer:,d}   "
      f"difference: {nar_layer - ar_layer:,d} = 2 adaptive-norm projections of 1024 -> 2048")
print(f"tiny model: {count_parameters(VallexModel(tiny)):,d} parameters")

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
ordered = sorted(parts.items(), key=lambda item: item[1])
ax.barh([p for p, _ in ordered], [c / 1e6 for _, c in ordered], color="tab:blue")
for y, (_, count) in enumerate(ordered):
    ax.text(count / 1e6 + 2, y, f"{count / 1e6:.2f} M", va="center", fontsize=8)
ax.set_xlabel("parameters (millions)")
ax.set_title(f"VALL-E X public checkpoint: {total / 1e6:.1f} M parameters")
ax.set_xlim(0, max(parts.values()) / 1e6 * 1.25)
show(fig)

# %% [markdown]
# The two decoders are almost everything. The NAR decoder is a third larger than the AR one only because
# its layer norms are *adaptive*: each one owns a 1024→2048 projection that turns the stage embedding into a
# gain and a bias (section 3.8 below). The embeddings are small: the text vocabulary has 2048 rows although the
# phoneme table (`vallex.text.SYMBOLS`) uses only 70 of them.
#
# ## 3.3 One sequence: `[text ; audio]`
#
# There is no encoder and no cross-attention (VALL-E §4.2: a decoder-only language model). The text tokens
# (phonemes of the prompt transcript, then of the target text) are embedded, the audio codes are embedded,
# each gets its own sinusoidal positions starting at 0, and the two are concatenated along time.

# %%
model = VallexModel(tiny).eval()
prompt_text = tokenize("こんにちは", "ja")  # transcript of a Japanese voice prompt
target_text = tokenize("Hello world.", "en")  # what we want said, in English
text = torch.tensor([prompt_text.ids + target_text.ids])  # LongTensor [1, S]
langs = language_ids(text.shape[1], len(prompt_text), "ja", target_text.langs)[None]  # [1, S]
prompt_codes0 = torch.randint(0, 1024, (1, 6))  # codebook 0 of a 6-frame prompt (random codes here)
audio_in = torch.cat([torch.tensor([[tiny.bos_id]]), prompt_codes0], dim=1)  # AR input: BOS first

text_emb = model.embed_text("ar", text, langs)  # [1, S, D]
audio_emb = model.embed_ar_audio(audio_in)  # [1, 1 + P, D]
print("text ids     ", text.tolist()[0])
print("language ids ", langs.tolist()[0], "  (en=0 zh=1 ja=2)")
print("text_emb     ", tuple(text_emb.shape), "  audio_emb", tuple(audio_emb.shape))

# %% [markdown]
# ## 3.4 Who knows what, and when
#
# Before any mask, the one picture that organises both decoders. Speech is a grid of codes: 8 codebooks
# (rows) × frames (columns), the **prompt**'s frames on the left (all 8 codebooks given), the **target**'s on
# the right (to be made). The text, prompt transcript and target, is fully known throughout (not drawn).
#
# * The **AR** decoder fills the first row left to right, one frame per step: at step *t* it predicts
#   q0 (the first codebook) of target frame *t* from the text, the prompt's q0 and the frames it made
#   before, and ends by predicting end-of-speech instead of a code.
# * The **NAR** decoder then fills the other rows top to bottom, one *whole row* per stage: at stage *s* it
#   predicts row q*s* of every target frame at once, from the text, the prompt's 8 codebooks and the target's
#   rows q0..q*s*−1.

# %%
P_DEMO, T_DEMO = 4, 10  # a 4-frame prompt and a 10-frame target, to keep the cells visible
panels = [("AR, step 1: q0 of target frame 1", dict(ar_step=0)),
          ("AR, step 6: q0 of target frame 6", dict(ar_step=5)),
          ("AR done: q0 of every frame is known", dict(ar_step=T_DEMO)),
          ("NAR stage 1: all of q1 at once", dict(nar_stage=1)),
          ("NAR stage 2: all of q2 at once", dict(nar_stage=2)),
          ("NAR stage 7: all of q7 (the last)", dict(nar_stage=7))]
fig, axes = plt.subplots(2, 3, figsize=(13, 4.6))
for ax, (title, where) in zip(axes.flat, panels):
    draw_token_grid(ax, token_states(P_DEMO, T_DEMO, **where), P_DEMO, title)
for ax in axes[:, 0]:
    ax.set_ylabel("codebook")
for ax in axes[1]:
    ax.set_xlabel("frames: prompt | target (black line)")
token_grid_legend(fig)
fig.suptitle("the AR makes row q0 frame by frame; the NAR makes rows q1-q7 one stage at a time", fontsize=11)
show(fig)

# %% [markdown]
# So the AR needs T steps for T frames (75 per second of speech), the NAR 7 whatever the length. Notebook 4
# runs both, and notebook 5 trains them on this same grid.
#
# ## 3.5 Attention masks
#
# **AR decoder.** Text positions see all the text and no audio; audio positions see all the text and the
# audio up to and including themselves. That is what lets the AR model be trained on whole utterances in
# one pass (teacher forcing) and still be sampled one frame at a time (VALL-E §4.2.1): row q0 of the grid.
# `vallex.model.ar_attention_mask(S, T)` builds it (True = may attend).
#
# **NAR decoder.** No mask at all: every position sees every other, because when a stage runs, the rows
# above it are known for *all* frames (the grid's NAR panels). Training batches add only a padding mask.

# %%
S, T = 7, 9
ar_mask = ar_attention_mask(S, T)  # bool [S+T, S+T]
position_names = [f"t{i}" for i in range(S)] + [f"a{i}" for i in range(T)]

fig, ax = plt.subplots(figsize=(4.6, 4.4))
ax.imshow(ar_mask.numpy(), cmap=matplotlib.colors.ListedColormap(["white", "tab:blue"]), vmin=0, vmax=1)
ax.axhline(S - 0.5, color="tab:red", lw=1)
ax.axvline(S - 0.5, color="tab:red", lw=1)
ax.set_xticks(range(S + T), position_names, fontsize=8, rotation=90)
ax.set_yticks(range(S + T), position_names, fontsize=8)
ax.set_xlabel("key (attended to): text t0.., audio a0..")
ax.set_ylabel("query (attending)")
ax.set_title("AR mask: blue = may attend", fontsize=10)
show(fig)
print("AR mask: text row 0 sees", int(ar_mask[0].sum()), "positions; the last audio row sees", int(ar_mask[-1].sum()))

# %% [markdown]
# The mask is not decoration; we can *measure* it. Change one audio code in the middle of the sequence and
# see which decoder outputs move. In the AR decoder only that position and later ones change (the text
# never sees the audio); in the NAR decoder everything changes.

# %%
torch.manual_seed(1)
codes = torch.randint(0, 1024, (1, T))
changed = codes.clone()
k = 4  # the audio frame we change
changed[0, k] = (codes[0, k] + 1) % 1024

with torch.inference_mode():
    text_ar = model.embed_text("ar", text[:, :S], langs[:, :S])
    ar_out = [model.ar_decoder(torch.cat([text_ar, model.embed_ar_audio(c)], 1), ar_attention_mask(S, T))
              for c in (codes, changed)]
    text_nar = model.embed_text("nar", text[:, :S], langs[:, :S])
    nar_out = [model.nar_decoder(torch.cat([text_nar, model.nar_audio_position(model.nar_audio_embeddings[0](c))], 1),
                                 None, stage=model.nar_stage_embedding(0))
               for c in (codes, changed)]
ar_delta = (ar_out[1] - ar_out[0]).abs().amax(-1)[0]  # [S+T]
nar_delta = (nar_out[1] - nar_out[0]).abs().amax(-1)[0]

FLOOR = 1e-9  # log scale: outputs that did not change at all sit on this floor
fig, axes = plt.subplots(2, 1, figsize=(8, 4), sharex=True, constrained_layout=True)
for ax, delta, title in ((axes[0], ar_delta, "AR decoder"), (axes[1], nar_delta, "NAR decoder")):
    ax.bar(range(S + T), delta.clamp(min=FLOOR).numpy(), bottom=0, color=["tab:gray"] * S + ["tab:orange"] * T)
    ax.axvline(S + k, color="tab:red", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_ylim(FLOOR, 10)
    ax.set_ylabel("max |Δ output|")
    ax.set_title(f"{title}: output change after changing audio frame a{k} (red line)", fontsize=10)
axes[1].set_xticks(range(S + T), position_names, fontsize=8)
axes[1].set_xlabel("position (grey: text, orange: audio); bars at the floor did not change at all")
show(fig)
assert ar_delta[: S + k].max() == 0 and ar_delta[S + k] > 0  # causal: nothing before the change moves
assert bool((nar_delta > 0).all())  # bidirectional: everything moves

# %% [markdown]
# ## 3.6 Inside one decoder layer: attention and feed-forward, by hand
#
# Each decoder is a stack of identical **pre-norm** layers (`vallex.model.decoder_layer`):
#
#     h   = x + Attention(LayerNorm₁(x))        # positions exchange information
#     out = h + FFN(LayerNorm₂(h))               # each position on its own: Linear, ReLU, Linear
#
# Attention, for each of the H heads: queries, keys and values are linear projections of the normed input;
# every query scores every key, `q · k / √d_head`; masked pairs get −∞; a softmax over keys turns the scores
# into weights that sum to 1; the output is the weighted sum of values. We write the AR decoder's first layer
# out by hand on the sequence of section 3.3, print every shape, and check the result against the library's
# layer.

# %%
layer = model.ar_decoder.layers[0]
x = torch.cat([text_emb, audio_emb], dim=1)  # [1, L, D]: L = S + 1 + P positions
L, D, H = x.shape[1], tiny.d_model, tiny.nhead
mask = ar_attention_mask(text.shape[1], audio_in.shape[1])  # [L, L]
with torch.inference_mode():
    normed = F.layer_norm(x, (D,), layer.norm1.weight, layer.norm1.bias, eps=layer.norm1.eps)
    qkv = normed @ layer.self_attn.in_proj.weight.T + layer.self_attn.in_proj.bias  # [1, L, 3D]
    q, k_, v = (t.view(1, L, H, D // H).transpose(1, 2) for t in qkv.split(D, dim=-1))  # each [1, H, L, D/H]
    scores = q @ k_.transpose(-1, -2) / (D // H) ** 0.5  # [1, H, L, L]: every query against every key
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)  # [1, H, L, L], rows sum to 1
    heads = weights @ v  # [1, H, L, D/H]
    attended = layer.self_attn.out_proj(heads.transpose(1, 2).reshape(1, L, D))  # [1, L, D]: heads side by side
    h = x + attended
    normed2 = F.layer_norm(h, (D,), layer.norm2.weight, layer.norm2.bias, eps=layer.norm2.eps)
    hidden = torch.relu(layer.linear1(normed2))  # [1, L, 4D]: the feed-forward's wider middle
    out = h + layer.linear2(hidden)  # [1, L, D]
    library_out = layer(x, mask)
for name, tensor in (("x", x), ("q, k, v (per head)", q), ("scores, weights", weights), ("heads", heads),
                     ("attention output", attended), ("FFN middle", hidden), ("layer output", out)):
    print(f"{name:20s} {tuple(tensor.shape)}")
print("by hand equals the library's layer:", torch.allclose(out, library_out, atol=1e-5),
      f"(max |diff| {(out - library_out).abs().max().item():.1e})")
assert torch.allclose(out, library_out, atol=1e-5)

# %% [markdown]
# The rest of the decoder is the same layer again (`num_layers` times) and a final LayerNorm; the AR's output
# layer then maps each audio position's vector to **1025 logits**, one per code and one for end-of-speech.
# Position *i*'s logits predict the code of position *i* + 1, which is why the input starts with BOS.

# %%
with torch.inference_mode():
    decoded = model.ar_decoder(x, mask)  # [1, L, D]
    logits = model.ar_logits(decoded[:, text.shape[1]:])  # [1, 1 + P, 1025]: one row per audio position
print("decoder output", tuple(decoded.shape), "-> logits of the audio positions", tuple(logits.shape))

fig, axes = plt.subplots(1, H, figsize=(13, 3.4), sharey=True)
labels = [f"t{i}" for i in range(text.shape[1])] + ["BOS"] + [f"a{i}" for i in range(prompt_codes0.shape[1])]
for head, ax in enumerate(axes):
    image = ax.imshow(weights[0, head].numpy(), cmap="viridis", vmin=0, vmax=float(weights.max()))
    ax.set_title(f"head {head}", fontsize=9)
    ax.set_xticks(range(0, L, 4), labels[::4], fontsize=8, rotation=90)
    ax.set_xlabel("key")
axes[0].set_yticks(range(0, L, 4), labels[::4], fontsize=8)
axes[0].set_ylabel("query")
fig.colorbar(image, ax=axes, pad=0.01, label="attention weight")
fig.suptitle("layer 0's attention weights with random weights: each row spreads over what the mask allows",
             fontsize=10)
show(fig)

# %% [markdown]
# With random weights each query spreads its weight over the positions the mask lets it see, with no
# preference that means anything: the shape is the mask's, the shading inside it is chance. What a trained
# model puts there (which text an audio frame attends to) is in notebook 6, on the model notebook 5 trains.
#
# ## 3.7 Where the language ID enters
#
# VALL-E X trains one model on several languages and tells it, with a **language ID**, which language's
# pronunciation to use (§3, the multilingual codec language models and their language ID). In the public
# checkpoint the ID is an embedding row (en=0, zh=1, ja=2) that `embed_text` **adds to every text-token
# embedding before the positional encoding**; audio tokens get none. The prompt transcript gets the prompt's
# language and the target text its own, token by token, which is what makes *cross-lingual* prompting work:
# a Japanese speaker's voice, English words.
#
# **Accent control** is the same mechanism used on purpose (the paper's abstract: the foreign accent "can
# be controlled by a language ID"): keep the English phonemes but give every target token the *Chinese* ID,
# and the model pronounces English the way its Chinese training speakers did.

# %%
no_accent = language_ids(text.shape[1], len(prompt_text), "ja", target_text.langs)
zh_accent = language_ids(text.shape[1], len(prompt_text), "ja", "zh")  # one language for all target tokens
print("no accent:", no_accent.tolist())
print("zh accent:", zh_accent.tolist())

# The language embedding is a per-position offset: with the same phonemes, switching a token's language
# moves its embedding by exactly E[zh] - E[en], whatever the token.
with torch.inference_mode():
    a = model.embed_text("ar", text, no_accent[None])
    b = model.embed_text("ar", text, zh_accent[None])
    table = model.ar_language_embedding.weight
    expected = table[MODEL_LANGUAGE_ID["zh"]] - table[MODEL_LANGUAGE_ID["en"]]
target = slice(len(prompt_text), None)
print("prompt part unchanged:", torch.equal(a[0, : len(prompt_text)], b[0, : len(prompt_text)]))
print("target part moved by E[zh] - E[en] at every token:",
      torch.allclose(b[0, target] - a[0, target], expected.expand_as(a[0, target]), atol=1e-6))

fig, ax = plt.subplots(figsize=(11, 1.9))
strip = torch.stack([no_accent, zh_accent]).numpy()
ax.imshow(strip, cmap=matplotlib.colors.ListedColormap(["tab:blue", "tab:red", "tab:green"]), vmin=0, vmax=2,
          aspect="auto")
ax.set_yticks([0, 1], ["no accent", "accent = zh"], fontsize=10)
ax.set_xticks(range(text.shape[1]),
              list(prompt_text.phonemes.replace(" ", "_") + target_text.phonemes.replace(" ", "_")), fontsize=11)
ax.axvline(len(prompt_text) - 0.5, color="black", lw=2)
ax.set_xlabel("text token (phoneme): prompt transcript | target text")
ax.set_title("language id per text token (blue en, red zh, green ja); black line: prompt | target", fontsize=10)
show(fig)

# %% [markdown]
# ## 3.8 The NAR stages: one decoder, seven jobs
#
# The NAR decoder is run seven times, stage *i* predicting codebook *i + 1* from the text and the sum of the
# embeddings of codebooks 0..*i* (VALL-E §4.2.2; the NAR panels of section 3.4). One set of weights serves all
# seven stages; it learns which stage it is in from a **stage embedding** `nar_stage_embeddings[i]` (a [1, D]
# vector) that drives every layer norm: `AdaptiveLayerNorm(x) = w ⊙ LayerNorm(x) + b` with
# `[w, b] = project_layer(stage embedding)`. So each stage gets its own gains and biases in every layer at the
# cost of one embedding row. By hand, for layer 0's first norm:

# %%
norm = model.nar_decoder.layers[0].norm1
x = torch.randn(1, 5, tiny.d_model)  # [1, 5, D]: any input
with torch.inference_mode():
    per_stage = []
    for stage in range(tiny.num_quantizers - 1):
        w, b = torch.split(norm.project_layer(model.nar_stage_embedding(stage)), tiny.d_model, dim=-1)  # [1, D] each
        by_hand = w * F.layer_norm(x, (tiny.d_model,), eps=norm.norm.eps) + b  # a plain LayerNorm, this stage's w, b
        assert torch.allclose(by_hand, norm(x, model.nar_stage_embedding(stage)), atol=1e-6)
        per_stage.append(by_hand[0].flatten())
    similarity = F.cosine_similarity(torch.stack(per_stage)[:, None], torch.stack(per_stage)[None], dim=-1)
print("w * LayerNorm(x) + b by hand equals AdaptiveLayerNorm for all 7 stages")
print("cosine similarity of the norm's output for the same input, stage by stage (random weights):")
print(np.array2string(similarity.numpy(), precision=2, suppress_small=True))

tied = [model.nar_predict_layers[j].weight is model.nar_audio_embeddings[j + 2].weight
        for j in range(tiny.num_quantizers - 1 - 1)]
print("\npredictor j shares its weight with NAR audio embedding j+2 (j = 0..5):", tied)
print("last predictor untied:", all(model.nar_predict_layers[-1].weight is not e.weight for e in model.nar_audio_embeddings))

# %% [markdown]
# The same input leaves the norm differently at each stage (similarities below 1): that is all a stage needs
# to behave differently. The output side has a twist inherited from the reference, printed last: the predictor
# of codebook *j + 1* shares its weight matrix with the NAR **input** embedding of codebook *j + 2* (j = 0..5);
# the last predictor is free. Notebook 4 runs the full AR loop (with a KV cache) and the seven NAR stages;
# notebook 5 trains both decoders; notebook 6 shows how the AR fails and how decoding catches it.
#
# ## 3.9 With the real checkpoint (optional)
#
# Set `VALLEX_WEIGHTS_DIR` to a folder holding `vallex-checkpoint.pt` (see `vallex download --help`) and
# this cell loads it (read with `torch.load(weights_only=True)`) and shows how similar the trained language
# embeddings are, and the learned scales `alpha` of the positional encodings. Without it, the cell says so
# and does nothing.

# %%
from vallex.weights import resolve_weights
from vallex.weights.checkpoint import load_model

weights_dir = os.environ.get("VALLEX_WEIGHTS_DIR")
if not weights_dir:
    print("VALLEX_WEIGHTS_DIR is not set: skipping the real-checkpoint section (nothing above needed it).")
else:
    paths = resolve_weights(weights_dir, download=False, components=["vallex"])
    trained = load_model(paths.vallex, config=paths.vallex_config)
    print(f"loaded {paths.vallex} ({count_parameters(trained):,d} parameters){' - RANDOM weights' if paths.random else ''}")
    for side in ("ar", "nar"):
        table = getattr(trained, f"{side}_language_embedding").weight.detach()
        cos = torch.nn.functional.cosine_similarity(table[:, None], table[None], dim=-1)
        print(f"{side} language embeddings, cosine similarity (rows/cols en, zh, ja):\n{np.round(cos.numpy(), 3)}")
    for name in ("ar_text_position", "ar_audio_position", "nar_text_position", "nar_audio_position"):
        print(f"{name}.alpha = {getattr(trained, name).alpha.item():.4f}")
