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
# In VALL-E's notation (§4.1-4.2), $x$ is the phoneme sequence, $\tilde C$ the acoustic prompt's codes (a matrix
# of frames × 8 codebooks), $C$ the codes to generate, and $c_{:,j}$ the $j$-th codebook of every frame (the paper
# counts codebooks from 1; the code, and the grids below, from 0: the paper's $c_{:,1}$ is row q0). The two
# decoders split the likelihood of the codes in two:
#
# $$p(C \mid x, \tilde C; \theta) \;=\; \underbrace{p(c_{:,1} \mid x, \tilde C_{:,1}; \theta_{AR})}_{\text{AR: section 3.5}}
# \;\cdot\; \underbrace{p(C_{:,2:8} \mid x, \tilde C; \theta_{NAR})}_{\text{NAR: section 3.8}}$$
#
# This notebook takes the model apart: a diagram of the whole pipeline, its sizes and where the parameters sit,
# the input sequence, what each decoder knows and predicts at each step, the attention masks and the AR's
# product over frames, one decoder layer written by hand (attention and feed-forward, checked against the
# library), where the **language ID** enters (the VALL-E X addition, §3), and the NAR's product over codebooks
# with its **stage embeddings** and adaptive layer norm. Each equation sits beside the cell that computes it.
#
# **Exercises** (three): build the AR's mask, compute the AR's log-likelihood in one masked pass, and compute the
# NAR's summed input. Each has a cell to fill in (it runs as shipped, and is wrong) and a check cell that prints
# ✓ when your code agrees with the library.
#
# > **Runs offline with random weights.** Everything here is about structure: shapes, masks and parameter
# > counts do not depend on the weight values, so a tiny randomly initialised model (`VallexConfig.tiny()`)
# > shows it all in a few seconds. The full-size model is only ever built on PyTorch's `meta` device (shapes,
# > no memory). If `VALLEX_WEIGHTS_DIR` points at a folder with the real checkpoint, the last section loads
# > it and looks at the trained language embeddings and positional scales.
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
from vallex.text import SYMBOLS, tokenize

torch.set_num_threads(1)  # small ops are fastest (and never stall) on one thread
_ = torch.manual_seed(0)


# %% [markdown]
# ## 3.0 The whole model in one picture
#
# In the spirit of Figure 1 of VALL-E X (and Figure 1 of VALL-E): the text front end (notebook 1) turns the prompt's
# transcript and the target text into phoneme ids, each token tagged with its language; EnCodec (notebook 2) turns
# the prompt's audio into 8 codebooks of codes; the AR decoder continues codebook 1 frame by frame until it emits
# end-of-speech; the NAR decoder fills codebooks 2-8 of the new frames, one whole codebook per pass; Vocos turns
# the 8 codebooks back into a waveform. Only the two decoders (and their embeddings) are VALL-E X's own weights.

# %%
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch


def box(ax, x, y, w, h, text, color):
    """A rounded box centred at (x, y) with ``text`` in it."""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                fc=color, ec="black", lw=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=8.5)


def arrow(ax, start, end, text="", at=None):
    """An arrow from ``start`` to ``end``, labelled ``text`` at ``at`` (default: just above its middle)."""
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, lw=1.1, color="0.25"))
    if text:
        x, y = at or ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.13)
        ax.text(x, y, text, ha="center", fontsize=7.5, color="0.25")


fig, ax = plt.subplots(figsize=(12, 4.4))
ax.set(xlim=(0, 12), ylim=(0, 4.4))
ax.axis("off")
INPUT, FRONT, MODEL, OUTPUT = "#eeeeee", "#dbe9f6", "#fde3c8", "#d9efd6"
box(ax, 1.0, 3.7, 1.8, 0.55, "prompt transcript\n(source language)", INPUT)
box(ax, 1.0, 2.75, 1.8, 0.55, "target text\n(target language)", INPUT)
box(ax, 1.0, 1.0, 1.8, 0.55, "prompt audio\n(a few seconds)", INPUT)
box(ax, 3.4, 3.2, 1.9, 0.9, "phonemizer (G2P)\nvallex.text.tokenize", FRONT)
box(ax, 3.4, 1.0, 1.9, 0.6, "EnCodec encoder\n(frozen)", FRONT)
box(ax, 5.8, 3.2, 2.0, 0.9, "phoneme ids x\n+ language ID ℓ per token\n(VALL-E X)", FRONT)
box(ax, 5.8, 1.0, 2.0, 0.6, "prompt codes C̃\n[P frames × 8]", FRONT)
box(ax, 8.3, 3.2, 2.0, 0.9, "AR decoder θ_AR\ncodebook 1 (q0),\none frame per step", MODEL)
box(ax, 8.3, 1.0, 2.0, 0.9, "NAR decoder θ_NAR\ncodebooks 2-8 (q1-q7),\none codebook per pass", MODEL)
box(ax, 10.9, 1.0, 1.5, 0.6, "Vocos\n(frozen)", OUTPUT)
box(ax, 10.9, 3.2, 1.5, 0.6, "speech\n24 kHz", OUTPUT)
arrow(ax, (1.9, 3.7), (2.45, 3.35))
arrow(ax, (1.9, 2.75), (2.45, 3.05))
arrow(ax, (1.9, 1.0), (2.45, 1.0))
arrow(ax, (4.35, 3.2), (4.8, 3.2))
arrow(ax, (4.35, 1.0), (4.8, 1.0))
arrow(ax, (6.8, 3.2), (7.3, 3.2), "x, ℓ")
arrow(ax, (6.8, 1.3), (7.3, 2.75), "C̃:,1", at=(6.85, 1.75))
arrow(ax, (6.8, 2.75), (7.3, 1.45), "x, ℓ", at=(6.85, 2.3))
arrow(ax, (6.8, 0.9), (7.3, 0.9), "C̃ (8 rows)", at=(6.95, 0.52))
arrow(ax, (8.3, 2.75), (8.3, 1.45), "c:,1 (until EOS)", at=(8.95, 2.05))
arrow(ax, (9.3, 1.0), (10.15, 1.0), "C [T × 8]")
arrow(ax, (10.9, 1.3), (10.9, 2.9))
ax.set_title("VALL-E X: phonemes and a voice prompt in, codec codes out; two decoders between them", fontsize=10)
show(fig)

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
assert (public.num_layers, public.d_model, public.nhead) == (12, 1024, 16)  # the prose above

# %% [markdown]
# ## 3.2 Where the parameters sit
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
nar_over_ar = (parts["NAR decoder: attention + FFN + norms"] + parts["NAR decoder: adaptive norms"]) / parts["AR decoder"]
print(f"the NAR decoder is {nar_over_ar:.2f} x the AR decoder")
assert 1.3 < nar_over_ar < 1.4  # "a third larger", below
assert len(SYMBOLS) == 70 and public.text_vocab_size == 2048  # "2048 rows ... only 70 of them", below
decoders = parts["AR decoder"] + parts["NAR decoder: attention + FFN + norms"] + parts["NAR decoder: adaptive norms"]
print(f"the two decoders hold {decoders / total:.1%} of the parameters")
assert decoders / total > 0.95  # "almost everything", below

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
print("language ids ", langs.tolist()[0], " ", MODEL_LANGUAGE_ID)
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
# ### Exercise 1: build the AR mask yourself
#
# Write `ar_mask(S, T)`: a bool tensor `[S+T, S+T]`, True where query (row) may attend to key (column), for `S`
# text tokens followed by `T` audio positions. Text sees all the text and no audio; audio sees all the text and
# the audio up to and including itself. As shipped it lets everything see everything (the NAR's rule), and the
# check says which entry is wrong. **Expected:** `✓ AR mask: right.` once your mask equals
# `vallex.model.ar_attention_mask` for every shape the check tries (empty text or audio included).

# %%
def ar_mask(S: int, T: int) -> torch.Tensor:
    """Your AR attention mask: bool [S+T, S+T], True = may attend."""
    return torch.ones(S + T, S + T, dtype=torch.bool)  # TODO: text must not see audio; audio must not see the future


# %%
from exercises import report
from exercises.nb03 import check_ar_mask

_ = report("AR mask", check_ar_mask, ar_mask)

# %% [markdown]
# ### The AR's product over frames (VALL-E §4.2, Eq. 1)
#
# The AR decoder models codebook 1 of the target, frame by frame, from the text and the prompt's codebook 1:
#
# $$p(c_{:,1} \mid x, \tilde C_{:,1}; \theta_{AR}) \;=\; \prod_{t=0}^{T} p(c_{t,1} \mid c_{<t,1}, \tilde c_{:,1}, x;
# \theta_{AR})$$
#
# (in VALL-E X, $x$ is the phonemes of the prompt's transcript followed by the target text's, §3). The cell below
# computes each factor literally: for frame $t$ it runs the decoder on `[x ; BOS ; C̃:,1 ; c<t,1]`, nothing more,
# reads the last position's softmax at the true code $c_{t,1}$, and multiplies (adds logs). That is *T* passes
# over ever longer sequences. The mask is what lets training (and exercise 2) get every factor from **one**
# pass over the whole utterance: position $t$ cannot see frames $\ge t$, so its output is the same as in the
# truncated pass. The AR loss of notebook 5 is the negative of this log-likelihood (summed over the batch).

# %%
g = torch.Generator().manual_seed(2)
x_ids, x_langs = text[:, :S], langs[:, :S]  # the first S phonemes of section 3.3's text
prompt_c1 = torch.randint(0, 1024, (1, 4), generator=g)  # C~_{:,1}: codebook 1 of a 4-frame prompt
target_c1 = torch.randint(0, 1024, (1, 6), generator=g)  # c_{:,1}: codebook 1 of 6 target frames
factors = []
with torch.inference_mode():
    for t in range(target_c1.shape[1]):  # one factor p(c_{t,1} | c_{<t,1}, C~_{:,1}, x) per frame
        ar_in = torch.cat([torch.tensor([[tiny.bos_id]]), prompt_c1, target_c1[:, :t]], dim=1)  # BOS, C~, c_<t
        seq = torch.cat([model.embed_text("ar", x_ids, x_langs), model.embed_ar_audio(ar_in)], dim=1)
        last = model.ar_decoder(seq, ar_attention_mask(S, ar_in.shape[1]))[:, -1]  # [1, D]
        factors.append(model.ar_logits(last).softmax(-1)[0, target_c1[0, t]].item())  # of 1025 ids
log_likelihood = float(np.log(factors).sum())
print("factors p(c_t,1 | ...):", [f"{p:.2e}" for p in factors])
print(f"log p(c_:,1 | x, C~_:,1) = sum of their logs = {log_likelihood:.3f} nats "
      f"(uniform over 1025 ids: {-len(factors) * np.log(1025):.3f})")

# %% [markdown]
# ### Exercise 2: the same log-likelihood from one masked pass
#
# Write `ar_log_likelihood(model, text, langs, prompt0, target0)`: run the AR decoder **once** over
# `[text ; BOS, prompt0, target0 without its last frame]` with `ar_attention_mask`, take the log-softmax of the
# logits at the positions that predict the target frames, and add up the log-probabilities of the true codes.
# As shipped it returns what a uniform guess would, T · ln 1025 below zero.
# **Expected:** `✓ AR log-likelihood in one pass: right.` when your number equals the check's frame-by-frame
# product (as computed above) within 0.001 nats.

# %%
def ar_log_likelihood(model, text, langs, prompt0, target0) -> float:
    """Your log p(c_:,1 | x, C~_:,1) in nats, from one pass: text, langs [1, S]; prompt0 [1, P]; target0 [1, T]."""
    return -target0.shape[1] * float(np.log(1025))  # TODO: one masked pass, then sum the true codes' log-probs


# %%
from exercises.nb03 import check_ar_log_likelihood

_ = report("AR log-likelihood in one pass", check_ar_log_likelihood, ar_log_likelihood)

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
assert logits.shape[-1] == tiny.audio_vocab_size + 1 == 1025  # 1024 codes + EOS, as the prose says

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
# checkpoint the ID is an embedding row (`MODEL_LANGUAGE_ID`, printed below) that `VallexModel.embed_text` **adds to
# every text-token embedding before the positional encoding**; audio tokens get none. For text token $i$ with
# phoneme id $x_i$ and language $\ell_i$, on each side (AR and NAR have their own tables):
#
# $$e_i \;=\; E_{\text{text}}[x_i] \;+\; E_{\text{lang}}[\ell_i] \;+\; \alpha \cdot PE(i)$$
#
# ($PE$ the sinusoidal table, $\alpha$ a learned scale; the language term is VALL-E X's whole addition to VALL-E's
# input). The prompt transcript gets the prompt's language and the target text its own, token by token, which
# is what makes *cross-lingual* prompting work: a Japanese speaker's voice, English words. The first cell below
# computes the three terms by hand and checks them against `embed_text`.
#
# **Accent control** is the same mechanism used on purpose (the paper's abstract: the foreign accent "can
# be controlled by a language ID"): keep the English phonemes but give every target token the *Chinese* ID,
# and the model pronounces English the way its Chinese training speakers did.

# %%
print("language table:", MODEL_LANGUAGE_ID)
with torch.inference_mode():
    e_text = model.ar_text_embedding(text)  # E_text[x_i]: [1, S, D]
    e_lang = model.ar_language_embedding(langs)  # E_lang[l_i]: [1, S, D], one row per token's language
    pe = model.ar_text_position.alpha * model.ar_text_position.table(text.shape[1], text.device, e_text.dtype)
    by_hand = e_text + e_lang + pe  # [1, S, D]
print("E_text[x] + E_lang[l] + alpha * PE equals embed_text:",
      torch.allclose(by_hand, model.embed_text("ar", text, langs), atol=1e-6))
assert torch.allclose(by_hand, model.embed_text("ar", text, langs), atol=1e-6)

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
assert torch.equal(a[0, : len(prompt_text)], b[0, : len(prompt_text)])
assert torch.allclose(b[0, target] - a[0, target], expected.expand_as(a[0, target]), atol=1e-6)

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
# ## 3.8 The NAR: a product over codebooks, one decoder for seven stages
#
# Given codebook 1 of every target frame (from the AR), the NAR decoder models the other seven codebooks, one at a
# time, each from all the ones below it (VALL-E §4.2, Eq. 2):
#
# $$p(C_{:,2:8} \mid x, \tilde C; \theta_{NAR}) \;=\; \prod_{j=2}^{8} p(c_{:,j} \mid C_{:,<j}, x, \tilde C;
# \theta_{NAR})$$
#
# and inside one factor the frames do not wait for each other: every $c_{t,j}$ is predicted at once, from the same
# input, so $p(c_{:,j} \mid \cdot) = \prod_t p(c_{t,j} \mid \cdot)$. That is why the NAR needs 7 passes whatever
# the length (the NAR panels of section 3.4). What the decoder reads at stage $j$ is one vector per frame, a
# **sum of codebook embeddings** (each codebook $k$ has its own table $e^{(k)}$, `nar_audio_embeddings[k-1]`):
#
# $$\text{target frame } t:\; \sum_{k=1}^{j-1} e^{(k)}(c_{t,k}) \qquad\qquad
# \text{prompt frame } t:\; \sum_{k=1}^{8} e^{(k)}(\tilde c_{t,k})$$
#
# The prompt's frames carry all eight codebooks (its acoustic detail is what the NAR copies the voice from);
# the target's carry only those made so far. `VallexModel.embed_nar_audio(codes, prompt_frames, j)` computes it,
# with the code's 0-based rows: `j` is the row q*j* this stage predicts (1..7, the paper's codebook *j* + 1).

# %% [markdown]
# ### Exercise 3: the NAR's summed input for a stage
#
# Write `nar_input(model, codes, prompt_frames, j)`: `codes` is a LongTensor `[1, T, 8]` whose first
# `prompt_frames` frames are the prompt; return `[1, T, D]`, the sum above (use `model.nar_audio_embeddings[k]` for
# row q*k*). As shipped it embeds row q0 alone, which is right only for the target frames at `j = 1`.
# **Expected:** `✓ NAR input: right.` when it equals `model.embed_nar_audio` for every stage `j = 1..7`.

# %%
def nar_input(model, codes: torch.Tensor, prompt_frames: int, j: int) -> torch.Tensor:
    """Your NAR input before positions: prompt frames sum rows q0..q7, target frames rows q0..q(j-1)."""
    return model.nar_audio_embeddings[0](codes[..., 0])  # TODO: add the other rows each frame carries


# %%
from exercises.nb03 import check_nar_input

_ = report("NAR input", check_nar_input, nar_input)

# %% [markdown]
# Now the product itself, one factor per stage, on random codes (4 prompt frames, 6 target frames, all 8 rows
# known, as in training): for each row q*j* the decoder reads the sum above, runs once with stage *j*'s embedding
# (below), and row q*j*'s output layer gives each target frame's distribution over 1024 codes; the log of the
# factor is the sum over frames of the true codes' log-probabilities. The NAR loss of notebook 5 is the negative
# of one such factor, for a stage drawn at random in each training step.

# %%
g = torch.Generator().manual_seed(5)
P_NAR, T_NAR = 4, 6
codes8 = torch.randint(0, 1024, (1, P_NAR + T_NAR, 8), generator=g)  # [1, P + T, 8]: prompt C~, then target C
with torch.inference_mode():
    x_nar = model.embed_text("nar", text[:, :S], langs[:, :S])  # x (+ language IDs) on the NAR side
    stage_logp = []
    for j in range(1, 8):  # one factor p(c_:,j | C_:,<j, x, C~) per row q1..q7 (the paper's codebooks 2..8)
        audio = model.embed_nar_audio(codes8, P_NAR, j)  # the sum of embeddings above: [1, P + T, D]
        hidden = model.nar_forward(x_nar, audio, stage=j - 1, output_start=P_NAR)  # target frames only: [1, T, D]
        logp = model.nar_predict_layers[j - 1](hidden).log_softmax(-1)  # [1, T, 1024]
        stage_logp.append(float(logp.gather(-1, codes8[:, P_NAR:, j:j + 1]).sum()))  # frames' product, as logs
print("log p(c_:,j | C_:,<j, x, C~) for rows q1..q7:", [f"{v:.2f}" for v in stage_logp])
print(f"log p(C_:,2:8 | x, C~) = {sum(stage_logp):.2f} nats (uniform over 1024 codes: {-7 * T_NAR * np.log(1024):.2f})")
assert sum(stage_logp) < -7 * T_NAR * np.log(1024) and max(stage_logp) == stage_logp[-1]  # the prose below

# %% [markdown]
# With random weights this is far *below* a uniform guess: the output layers of rows q1-q6 share their weights
# with NAR input embeddings (the end of this section), initialised N(0, 1) like every embedding, so their logits
# are large and confidently wrong; row q7's output layer is untied (a small initialisation) and comes closest to
# uniform. Training (notebook 5) is what brings each factor up.
#
# One set of weights serves all seven stages; it learns which stage it is in from a **stage embedding**
# `nar_stage_embeddings[i]` (a [1, D] vector; stage *i* = 0..6 predicts row q*i+1*) that drives every layer norm:
# `AdaptiveLayerNorm(x) = w ⊙ LayerNorm(x) + b` with `[w, b] = project_layer(stage embedding)`. So each stage gets
# its own gains and biases in every layer at the cost of one embedding row. By hand, for layer 0's first norm:

# %%
norm = model.nar_decoder.layers[0].norm1
x = torch.randn(1, 5, tiny.d_model)  # [1, 5, D]: any input
with torch.inference_mode():
    per_stage = []
    for stage in range(tiny.num_quantizers - 1):
        w, b = torch.split(norm.project_layer(model.nar_stage_embedding(stage)), tiny.d_model, dim=-1)  # [1, D] each
        normed = F.layer_norm(x, (tiny.d_model,), norm.norm.weight, norm.norm.bias, eps=norm.norm.eps)  # [1, 5, D]
        by_hand = w * normed + b  # a plain LayerNorm, then this stage's w, b
        assert torch.allclose(by_hand, norm(x, model.nar_stage_embedding(stage)), atol=1e-6)
        per_stage.append(by_hand[0].flatten())
    similarity = F.cosine_similarity(torch.stack(per_stage)[:, None], torch.stack(per_stage)[None], dim=-1)
print("w * LayerNorm(x) + b by hand equals AdaptiveLayerNorm for all 7 stages")
off_diagonal = similarity[~torch.eye(len(similarity), dtype=torch.bool)]
assert off_diagonal.max() < 0.99  # "similarities below 1", below
print("cosine similarity of the norm's output for the same input, stage by stage (random weights):")
print(np.array2string(similarity.numpy(), precision=2, suppress_small=True))

tied = [model.nar_predict_layers[j].weight is model.nar_audio_embeddings[j + 2].weight
        for j in range(tiny.num_quantizers - 1 - 1)]
print("\npredictor j shares its weight with NAR audio embedding j+2 (j = 0..5):", tied)
print("last predictor untied:", all(model.nar_predict_layers[-1].weight is not e.weight for e in model.nar_audio_embeddings))
assert all(tied) and all(model.nar_predict_layers[-1].weight is not e.weight for e in model.nar_audio_embeddings)

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
