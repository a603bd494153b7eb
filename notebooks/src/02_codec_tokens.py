# %% [markdown]
# # 2. Codec tokens: speech as 8 streams of integers at 75 Hz
#
# A language model needs a vocabulary. VALL-E (Wang et al. 2023, [arXiv 2301.02111](https://arxiv.org/abs/2301.02111),
# §3 "Background: Speech Quantization") takes it from a neural audio codec, **EnCodec** (Défossez et al.
# 2022, [arXiv 2210.13438](https://arxiv.org/abs/2210.13438)): a convolutional encoder turns 24 kHz audio into
# one 128-dimensional vector every 320 samples (75 per second), and **residual vector quantisation** (RVQ)
# writes each vector as 8 integers from 8 codebooks of 1024 entries (the first cell checks each of these
# numbers against the library). VALL-E X ([arXiv 2303.03926](https://arxiv.org/abs/2303.03926), §3) keeps exactly
# this representation for every language: the acoustic tokens are language-independent, only the text side changes.
#
# The public checkpoint's outputs are turned back into sound by **Vocos** (Siuzdak 2023,
# [arXiv 2306.00814](https://arxiv.org/abs/2306.00814)), a vocoder trained on the same EnCodec tokens, as the
# reference implementation does. What the real model sounds like: the paper's demo page,
# <https://vallex-demo.github.io/>.
#
# > **Two kinds of codes in this notebook.** Unless the real EnCodec weights are on the machine, the codec
# > that runs is **untrained** (`vallex.weights.random_weights.random_codec()`: the real architecture, codebooks
# > filled from a test signal). It shows every shape, the frame rate and the RVQ mechanics, but its codes and its
# > decoded audio mean nothing. What real codes look like comes from **real speech encoded by the real
# > EnCodec**: voice presets of the reference implementation (`notebooks/data/presets`, MIT; a few seconds each of
# > English, Mandarin and Japanese). Each figure says which kind it shows. Point `VALLEX_WEIGHTS_DIR` at the
# > real EnCodec and Vocos (`vallex download --weights-dir DIR`) and the codec cells use them too, the
# > spectrograms of 2.5 are drawn and the presets are played.
#
# Three **exercises** ask you to write RVQ encoding and decoding yourself (2.3) and to predict the bitrate
# (2.4); each check compares your answer with EnCodec's own quantizer and prints `✓` or what is not right yet.
# The answers are in `notebooks/exercises/nb02.py`.
#
# The input audio is synthetic speech from espeak-ng, made on the spot.

# %%
import os
import subprocess
import tempfile
import warnings
import wave
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Audio, Markdown, display
from tutorial import CODE_COLORS, draw_codes, hear, presets, real_codec, show

from vallex.audio import FRAME_RATE, HOP, SAMPLE_RATE, load_audio
from vallex.audio.codec import CODEBOOK_SIZE, ENCODEC_BANDWIDTH, NUM_CODEBOOKS
from vallex.text import ids_to_phonemes
from vallex.weights import pretrained_codec
from vallex.weights.random_weights import random_codec

torch.set_num_threads(1)
_ = torch.manual_seed(0)
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto, imported by vocos

WEIGHTS_DIR = os.environ.get("VALLEX_WEIGHTS_DIR")
codec = pretrained_codec(WEIGHTS_DIR) if WEIGHTS_DIR else random_codec(seed=0)
RANDOM_WEIGHTS = codec.paths is None or codec.paths.random  # a make_random_weights folder is random too
print("codec weights:", "RANDOM (untrained: codes and decoded audio mean nothing)" if RANDOM_WEIGHTS else WEIGHTS_DIR)
encodec = codec.encodec
dimension = encodec.quantizer.dimension
assert (SAMPLE_RATE, HOP, FRAME_RATE, dimension, NUM_CODEBOOKS, CODEBOOK_SIZE) == (24000, 320, 75, 128, 8, 1024)
print(f"{SAMPLE_RATE} Hz audio, one {dimension}-dimensional vector per {HOP} samples = {FRAME_RATE} per second, "
      f"{NUM_CODEBOOKS} codebooks of {CODEBOOK_SIZE} entries")

# %% [markdown]
# ## 2.1 Input speech
#
# espeak-ng writes WAV at its own sample rate (printed below); `vallex.audio.load_audio` is the single door
# every recording goes through: mono, resampled to 24 kHz, float32 in [-1, 1].

# %%
workdir = Path(tempfile.mkdtemp(prefix="vallex-nb02-"))
wav_path = workdir / "speech.wav"
subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav_path),
                "Speech becomes tokens, and tokens become speech again."], check=True)
with wave.open(str(wav_path)) as raw:
    print(f"espeak-ng wrote {raw.getnframes()} samples at {raw.getframerate()} Hz")
wav = load_audio(wav_path)
print(f"load_audio: {len(wav)} samples at {SAMPLE_RATE} Hz = {len(wav) / SAMPLE_RATE:.2f} s, peak {np.abs(wav).max():.2f}")
display(Audio(wav, rate=SAMPLE_RATE))

# %% [markdown]
# ## 2.2 Encoding: `[N] samples → [1, T, 8]` codes
#
# `AudioCodec.encode_audio` runs EnCodec at 6 kbps. One frame covers 320 samples, so T = ⌈N / 320⌉. Each frame
# gets 8 codes, one per codebook, each in 0..1023. We call the codebooks q0 … q7, as the library does: q0 is
# the first, the one the AR decoder will predict. The figure zooms into seven frames: the bands alternate grey
# and white, one per frame, and above each are the 8 integers that stand for its 320 samples.

# %%
codes = codec.encode_audio(wav)  # LongTensor [1, T, 8]
T = codes.shape[1]
frame_ms = HOP / SAMPLE_RATE * 1000
print("codes", tuple(codes.shape), codes.dtype, f"range {int(codes.min())}..{int(codes.max())}")
print(f"T = ceil({len(wav)} / {HOP}) = {-(-len(wav) // HOP)}; frame rate {SAMPLE_RATE} / {HOP} = {FRAME_RATE} Hz; "
      f"one frame = {frame_ms:.1f} ms")

first = int(np.argmax(np.abs(wav) > 0.1)) // HOP  # the first frame with speech in it
shown = range(first, first + 7)
fig, ax = plt.subplots(figsize=(11, 3.2))
t_ms = np.arange(shown[0] * HOP, (shown[-1] + 1) * HOP) / SAMPLE_RATE * 1000
ax.plot(t_ms, wav[shown[0] * HOP:(shown[-1] + 1) * HOP], lw=0.8, color="tab:blue")
for k, frame in enumerate(shown):
    start = frame * frame_ms
    if k % 2 == 0:
        ax.axvspan(start, start + frame_ms, color="0.9", zorder=0)
    ax.text(start + frame_ms / 2, 1.02, "\n".join(str(int(c)) for c in codes[0, frame]), ha="center", va="bottom",
            fontsize=7, family="monospace", transform=ax.get_xaxis_transform())
ax.set_xlabel(f"time (ms): {len(shown)} frames of {HOP} samples = {frame_ms:.1f} ms each")
ax.set_ylabel("sample value")
ax.set_title("each frame of audio becomes 8 code ids (q0-q7 top to bottom; untrained codec: arbitrary ids)",
             fontsize=10, pad=92)
show(fig)

# %% [markdown]
# ### What real codes look like
#
# The codes of the untrained codec above are arbitrary. Here are those of **real speech through the real
# EnCodec**: a 3-second English preset, all 8 codebooks; the top strip is the whole utterance, the bottom one
# zooms into 30 frames (0.4 s) with each id written in its cell. A code id is a *name* (entry 17 of a codebook
# is no more like entry 18 than like entry 900), so the figure gives each id an arbitrary colour of its own
# rather than a colour scale; what it shows is *where codes repeat and where they change*.

# %%
library = presets()
real = library.load("librispeech_2")  # VoicePrompt: codes [1, T, 8], transcript ids, language
real_codes = real.codes[0].numpy()  # [T, 8]
print(f"{real.name}: {real.seconds:.2f} s of real {real.language} speech, codes {tuple(real.codes.shape)}")
print("transcript (phonemes):", ids_to_phonemes(real.text_ids))

zoom = slice(75, 105)  # 30 frames from 1 s in: mid-sentence
assert zoom.stop - zoom.start == 30 and round(real.seconds) == 3  # the prose above
fig, (top, bottom) = plt.subplots(2, 1, figsize=(13, 5.6), gridspec_kw={"height_ratios": [1, 2.2]})
draw_codes(top, real_codes.T)
top.axvspan(zoom.start, zoom.stop, fill=False, ec="black", lw=1.5)
top.set_yticks(range(NUM_CODEBOOKS), [f"q{j}" for j in range(NUM_CODEBOOKS)], fontsize=7)
top.set_xlabel("")  # the zoom below names the axis
top.set_title(f"real EnCodec codes of real speech ({real.name}), all {len(real_codes)} frames; "
              f"the box is the zoom below. One colour per id: colours carry no order", fontsize=10)
draw_codes(bottom, real_codes[zoom].T)
luma = CODE_COLORS(np.arange(CODEBOOK_SIZE + 1))[:, :3] @ [0.299, 0.587, 0.114]  # brightness of each id's colour
for t in range(zoom.stop - zoom.start):
    for j in range(NUM_CODEBOOKS):
        code = real_codes[zoom.start + t, j]
        bottom.text(t + 0.5, j, str(code), ha="center", va="center", fontsize=6.5,
                    color="white" if luma[code] < 0.5 else "black")  # legible on dark and light cells
bottom.set_xticks(np.arange(0, 31, 5), [str(zoom.start + k) for k in range(0, 31, 5)])
bottom.set_xlabel("frame (75 per second)")
bottom.set_yticks(range(NUM_CODEBOOKS), [f"q{j}" for j in range(NUM_CODEBOOKS)])
show(fig)
changes = (real.codes[0, 1:] != real.codes[0, :-1]).float().mean(0).numpy()  # [8]
print("share of frames whose code differs from the previous frame's, per codebook:",
      " ".join(f"q{j} {c:.0%}" for j, c in enumerate(changes)))
assert changes.min() > 0.8  # the sentence below
display(Markdown(
    f"Codes change at almost every frame, in every codebook (from {changes.min():.0%} of frames in q{changes.argmin()} "
    f"to {changes.max():.0%} in q{changes.argmax()}): at {frame_ms:.1f} ms per frame even a steady vowel is written "
    "with changing ids, so codec ids are not \"letters\" of speech the way phonemes are letters of text."))

# %% [markdown]
# How much of each codebook's vocabulary does speech use, and how evenly? Over all the presets, per codebook:
# the number of distinct ids, and the **entropy** of their frequencies (10 bits would be all 1024 ids equally
# often). Next to it, the codes of our espeak-ng clip under the untrained codec, as a warning: what an untrained
# codec's codebooks use is a side effect of how they were filled, not a property of EnCodec.

# %%
def usage(frames: np.ndarray) -> tuple[list[int], list[float]]:
    """Distinct ids and entropy (bits) of each codebook of codes [T, 8]."""
    distinct, entropy = [], []
    for j in range(frames.shape[1]):
        _, counts = np.unique(frames[:, j], return_counts=True)
        p = counts / counts.sum()
        distinct.append(len(counts))
        entropy.append(float(-(p * np.log2(p)).sum()))
    return distinct, entropy


seconds = [library.load(name).seconds for name in library.names()]
real_frames = np.concatenate([library.load(name).codes[0].numpy() for name in library.names()])  # [F, 8]
real_distinct, real_entropy = usage(real_frames)
clip_distinct, clip_entropy = usage(codes[0].numpy())
print(f"{len(seconds)} presets of {min(seconds):.1f}-{max(seconds):.1f} s: {len(real_frames)} frames of real speech")
fig, ax = plt.subplots(figsize=(8, 3))
x = np.arange(NUM_CODEBOOKS)
ax.bar(x - 0.2, real_entropy, 0.4, label=f"real speech, real EnCodec ({len(real_frames)} frames)", color="tab:blue")
ax.bar(x + 0.2, clip_entropy, 0.4, label=f"espeak-ng clip, UNTRAINED codec ({T} frames)", color="tab:gray")
ax.axhline(np.log2(CODEBOOK_SIZE), color="black", ls=":", lw=1)
ax.text(7.6, np.log2(CODEBOOK_SIZE), "10 bits: all 1024 ids equally often", ha="right", va="bottom", fontsize=8)
ax.set_xticks(x, [f"q{j}" for j in x])
ax.set_xlabel("codebook")
ax.set_ylabel("entropy of the ids (bits)")
ax.set_ylim(0, 11)
ax.legend(fontsize=8, loc="lower right")
ax.set_title("how evenly each codebook's ids are used", fontsize=10)
show(fig)
print("distinct ids per codebook, real speech:", real_distinct)
print("distinct ids per codebook, untrained codec on the espeak clip:", clip_distinct)
display(Markdown(
    f"Real speech uses much of every codebook: {min(real_distinct)} to {max(real_distinct)} distinct ids per "
    f"codebook in {len(real_frames)} frames, {min(real_entropy):.1f} to {max(real_entropy):.1f} bits of entropy, "
    f"q0 {'the least' if int(np.argmin(real_entropy)) == 0 else 'not the least'} ({real_entropy[0]:.1f} bits). "
    f"That is what the models face: the AR picks q0 among {CODEBOOK_SIZE} ids at every one of {FRAME_RATE} frames "
    f"a second, and the NAR the {NUM_CODEBOOKS - 1} others. The untrained codec's q0 uses {clip_distinct[0]} ids "
    f"on the clip, its other codebooks {min(clip_distinct[1:])} to {max(clip_distinct[1:])}."))

# %% [markdown]
# ## 2.3 Residual vector quantisation
#
# RVQ quantises in stages: the first codebook picks the entry closest to the encoder vector, the second the
# entry closest to what is *left over*, and so on. Each codebook refines the sum of the previous ones, which is why
# VALL-E can split the work: the **first** codebook carries the coarse content, the later ones add acoustic
# detail (VALL-E §3, §4.2).
#
# RVQ is easiest to see where we can draw it: in two dimensions. We train a 4-stage RVQ with 8 entries per
# codebook from scratch: stage *k* runs k-means on the residuals that stages 1..*k*−1 leave. That is how
# EnCodec's quantizer initialises its codebooks too (k-means on the first batch of residuals), before moving
# averages refine them during training.

# %%
rng = np.random.default_rng(0)
angle = rng.uniform(0, 2 * np.pi, 2000)
points = np.stack([np.cos(angle), np.sin(angle)], 1) * rng.normal(1.0, 0.08, (2000, 1))  # a noisy ring
points += rng.normal(0, 0.05, points.shape)


def kmeans(x: np.ndarray, k: int, iterations: int = 20) -> np.ndarray:
    """k centroids [k, 2] of the points x [N, 2] (Lloyd's algorithm from k random points)."""
    centroids = x[np.random.default_rng(1).choice(len(x), k, replace=False)]
    for _ in range(iterations):
        nearest = ((x[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
        centroids = np.stack([x[nearest == j].mean(0) if (nearest == j).any() else centroids[j] for j in range(k)])
    return centroids


stages, entries = 4, 8
residual, codebooks, reconstructions = points.copy(), [], []
for _ in range(stages):
    codebook = kmeans(residual, entries)  # trained on what the earlier stages left over
    ids = ((residual[:, None] - codebook[None]) ** 2).sum(-1).argmin(1)  # [N]: one id per point
    residual = residual - codebook[ids]
    codebooks.append(codebook)
    reconstructions.append(points - residual)  # the sum of the chosen entries so far
toy_norms = [1.0] + [np.linalg.norm(points - r) / np.linalg.norm(points) for r in reconstructions]

fig, axes = plt.subplots(1, stages, figsize=(13, 3.3), sharex=True, sharey=True)
for k, ax in enumerate(axes):
    ax.scatter(points[:, 0], points[:, 1], s=2, color="0.8")
    ax.scatter(reconstructions[k][:, 0], reconstructions[k][:, 1], s=4, color="tab:orange")
    ax.set_title(f"{k + 1} codebook{'s' if k else ''}: {entries ** (k + 1)} possible points\n"
                 f"error {toy_norms[k + 1]:.0%} of the signal", fontsize=9)
    ax.set_aspect("equal")
fig.suptitle("RVQ from scratch: grey = data, orange = each point written as the sum of one entry per codebook",
             fontsize=10, y=1.04)
show(fig)
assert all(later < earlier for earlier, later in zip(toy_norms, toy_norms[1:]))  # "shrinks with every stage"
display(Markdown(
    f"One codebook of {entries} entries can only place {entries} points on the ring; two place {entries ** 2}, "
    f"{stages} place {entries ** stages}, and the error shrinks with every stage (from {toy_norms[1]:.0%} to "
    f"{toy_norms[-1]:.0%} of the signal) because each new codebook was trained on exactly the error left so far. "
    f"EnCodec does the same in {dimension} dimensions with {CODEBOOK_SIZE} entries per codebook: {NUM_CODEBOOKS} "
    f"codebooks = {NUM_CODEBOOKS * int(np.log2(CODEBOOK_SIZE))} bits per frame."))

# %% [markdown]
# ### RVQ as equations
#
# Write $\mathbf{x}_t \in \mathbb{R}^{128}$ for the encoder's vector of frame $t$ and $C_i$ for codebook $i$
# (1024 entries $C_i[0], \dots, C_i[1023]$). Encoding starts from the whole vector and, stage by stage, picks the
# nearest entry to what is left and removes it:
#
# $$\mathbf{r}_0 = \mathbf{x}_t, \qquad q_{t,i} = \arg\min_j \lVert \mathbf{r}_{i-1} - C_i[j] \rVert^2, \qquad
# \mathbf{r}_i = \mathbf{r}_{i-1} - C_i[q_{t,i}], \qquad i = 1, \dots, 8.$$
#
# Decoding is a sum, one entry per codebook (VALL-E §3's "residual" structure):
#
# $$\hat{\mathbf{x}}_t = \sum_{i=1}^{8} C_i[q_{t,i}] = \mathbf{x}_t - \mathbf{r}_8 .$$
#
# The cell runs these 8 stages with EnCodec's own quantizer layers on the encoder's output (each line is marked
# with its term) and checks that it reproduces `encode_audio` exactly. (The library numbers codebooks from 0:
# $C_1$ is q0.)

# %%
with torch.inference_mode():
    embedding = encodec.encoder(torch.from_numpy(wav).view(1, 1, -1))  # x: [1, 128, T]
    residual = embedding  # r_0 = x
    manual_codes, codec_residuals = [], [embedding]
    for layer in encodec.quantizer.vq.layers[:NUM_CODEBOOKS]:
        indices = layer.encode(residual)  # q_i = argmin_j ||r_{i-1} - C_i[j]||: [1, T]
        residual = residual - layer.decode(indices)  # r_i = r_{i-1} - C_i[q_i]
        manual_codes.append(indices)
        codec_residuals.append(residual)
    quantized = embedding - residual  # x̂ = Σ_i C_i[q_i] = x - r_8
manual = torch.stack(manual_codes, dim=-1)  # [1, T, 8]
assert torch.equal(manual, codes)
print(f"encoder output x: {tuple(embedding.shape)}; RVQ by hand equals encode_audio: {torch.equal(manual, codes)}")
codebook_table = torch.stack([layer.codebook for layer in encodec.quantizer.vq.layers[:NUM_CODEBOOKS]])  # [8, 1024, 128]
frames_x = embedding[0].T.contiguous()  # [T, 128]: one row per frame, the layout of the exercises

# %% [markdown]
# ### Exercise 1: RVQ encoding by hand
#
# Write `my_rvq_encode(x, codebooks)` with nothing but tensor operations: `x` is `[T, 128]` (one row per frame),
# `codebooks` is `[8, 1024, 128]`; return the codes `[T, 8]`. Each stage needs two lines: the index of the
# nearest entry for every row of the residual ($q_{t,i}$; `torch.cdist` gives all distances at once), and the
# new residual ($\mathbf{r}_i$). The check runs your function and EnCodec's quantizer on the same random
# vectors and codebooks.
#
# **Expected:** as shipped every code is 0 (nothing is searched), so the cell below matches few of the codec's
# codes and the check prints `✗ not yet`; with the two lines your codes match `encode_audio`'s (all of them, or all
# but a near-tie or two: float32 distances are computed in another order) and the check prints `✓`.

# %%
def my_rvq_encode(x: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    residual, codes = x, []
    for codebook in codebooks:  # C_i: [1024, 128]
        ids = torch.zeros(len(residual), dtype=torch.long, device=codebook.device)  # TODO: q_i, the nearest entries
        # TODO: residual = r_i
        codes.append(ids)
    return torch.stack(codes, dim=1)  # [T, 8]


mine = my_rvq_encode(frames_x, codebook_table)
print(f"your codes equal encode_audio's in {(mine == codes[0]).float().mean():.0%} of the {T * NUM_CODEBOOKS} places")

# %%
from exercises import report
from exercises.nb02 import check_rvq_decode, check_rvq_encode

_ = report("RVQ encoding", check_rvq_encode, my_rvq_encode)

# %% [markdown]
# ### Exercise 2: RVQ decoding
#
# Write `my_rvq_decode(codes, codebooks)`: codes `[T, 8]`, codebooks `[8, 1024, 128]`, the sum
# $\hat{\mathbf{x}}_t = \sum_i C_i[q_{t,i}]$ as `[T, 128]`. This is all Vocos does with the codes before its
# network runs (2.5); the check compares your sum with EnCodec's `quantizer.decode`.
#
# **Expected:** as shipped the cell returns zeros and the check prints `✗ not yet`; the one-line sum prints `✓`.

# %%
def my_rvq_decode(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    return torch.zeros(codes.shape[0], codebooks.shape[-1])  # TODO: the sum over codebooks of C_i[q_i]


error = (my_rvq_decode(codes[0], codebook_table) - quantized[0].T).norm() / quantized.norm()
print(f"your x̂ on the clip differs from the quantizer's by {error:.0%} of its size")
_ = report("RVQ decoding", check_rvq_decode, my_rvq_decode)

# %% [markdown]
# ### How much each codebook removes
#
# The left panel follows $\lVert \mathbf{r}_i \rVert / \lVert \mathbf{x} \rVert$, the share left after $i$
# codebooks, for the toy ring and for the codec that ran here; its dotted line is the share of $\mathbf{x}$ that
# *varies from frame to frame*, $\lVert \mathbf{x} - \bar{\mathbf{x}} \rVert / \lVert \mathbf{x} \rVert$ with
# $\bar{\mathbf{x}}$ the clip's average vector (what is left when only the part common to all frames is removed).
# The right panel follows only that varying part, the part that tells one frame from another:
# $\lVert \mathbf{r}_i - \bar{\mathbf{r}}_i \rVert / \lVert \mathbf{x} - \bar{\mathbf{x}} \rVert$.

# %%
mean_vector = embedding.mean(dim=-1, keepdim=True)  # x̄: [1, 128, 1], the clip's average encoder vector


def varying(r: torch.Tensor) -> float:
    """‖r - r̄‖: the size of what differs between the frames of r [1, 128, T] (or points [N, 2])."""
    r = torch.as_tensor(r).reshape(-1, r.shape[-1]) if r.ndim == 3 else torch.as_tensor(r).T
    return (r - r.mean(dim=-1, keepdim=True)).norm().item()


codec_norms = [(r.norm() / embedding.norm()).item() for r in codec_residuals]  # ‖r_i‖ / ‖x‖
codec_varying = [varying(r) / varying(embedding) for r in codec_residuals]  # ‖r_i - r̄_i‖ / ‖x - x̄‖
toy_varying = [varying(points)] + [varying(points - r) for r in reconstructions]
toy_varying = [v / toy_varying[0] for v in toy_varying]
varying_share = varying(embedding) / embedding.norm().item()
with torch.inference_mode():
    first_entries = encodec.quantizer.vq.layers[0].decode(manual_codes[0])  # C_1[q_t,1]: [1, 128, T]
cosine_to_mean = torch.nn.functional.cosine_similarity(first_entries, mean_vector, dim=1).mean().item()

codec_label = "EnCodec here: UNTRAINED codebooks" if RANDOM_WEIGHTS else "EnCodec (real weights)"
fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.4))
for ax, toy, ours in ((left, toy_norms, codec_norms), (right, toy_varying, codec_varying)):
    ax.plot(range(stages + 1), toy, "o-", label="2-D ring, codebooks trained by k-means (above)")
    ax.plot(range(NUM_CODEBOOKS + 1), ours, "s--", color="tab:gray", label=codec_label)
    for i, value in enumerate(ours):
        ax.annotate(f"{value:.1%}" if ax is left else f"{value:.0%}", (i, value), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=7)
    ax.set_xlabel("codebooks used")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
left.axhline(varying_share, color="tab:gray", ls=":", lw=1, label="part of x that varies between frames")
left.legend(fontsize=8, loc="upper right")
left.set_ylabel("‖residual‖ / ‖input‖")
left.set_ylim(0, 1.1)
left.set_title("what is left after each codebook", fontsize=10)
right.set_ylabel("‖r - r̄‖ / ‖x - x̄‖")
right.set_ylim(0, max(1.1, max(codec_varying) * 1.15))
right.set_title("what is left of the part that varies between frames", fontsize=10)
show(fig)
print(f"codec: left after 1 codebook {codec_norms[1]:.1%}, after {NUM_CODEBOOKS} {codec_norms[-1]:.1%}; "
      f"part of x that varies between frames {varying_share:.1%}, of it left after 1 codebook {codec_varying[1]:.0%}, "
      f"after {NUM_CODEBOOKS} {codec_varying[-1]:.0%}; mean cosine between the first codebook's chosen entries and "
      f"x̄: {cosine_to_mean:.2f}")

# %%
if RANDOM_WEIGHTS:
    # The explanation below holds only while these do (a rebuild elsewhere must not contradict it).
    assert varying_share < 0.1 and cosine_to_mean > 0.9 and codec_norms[1] < 0.5 and codec_varying[-1] > 0.9
    display(Markdown(
        f"The untrained codec's first codebook leaves only {codec_norms[1]:.1%} of the input, which looks like a "
        "trained codebook's work. It is not. The untrained encoder's vectors are almost all **one vector common to "
        f"every frame**: what varies from frame to frame is {varying_share:.1%} of the whole (the dotted line). "
        "The first codebook was filled with this same encoder's outputs on a test signal (`random_codec` does that, "
        "so that codes vary at all), so every entry points the way the average does (mean cosine "
        f"{cosine_to_mean:.2f} with $\\bar{{\\mathbf{{x}}}}$), and picking any of them removes most of the shared "
        f"vector: that is the drop to {codec_norms[1]:.1%}, and it says nothing about this clip. The right panel "
        "follows what does: the part that varies between frames, where the speech is. After one codebook it is "
        f"{codec_varying[1]:.0%} of what it was (the chosen entries bring differences of their own), after "
        f"{NUM_CODEBOOKS} still {codec_varying[-1]:.0%}: nothing that tells one frame from another was captured, "
        f"where the ring's trained codebooks shrink even this part at every stage (to {toy_varying[-1]:.0%}). "
        "Shrinking the part that carries the speech is what only training gives (the real EnCodec's residual "
        "shrinks with every codebook, which is why its bitrate can be chosen by keeping 2, 4, 8, 16 or 32 of them)."))
else:
    display(Markdown(
        f"The real EnCodec leaves {codec_norms[1]:.1%} of the input after one codebook and {codec_norms[-1]:.1%} "
        f"after {NUM_CODEBOOKS}, and {codec_varying[-1]:.0%} of the part that varies between frames: its trained "
        "codebooks shorten the residual stage by stage, which is why its bitrate can be chosen by keeping 2, 4, 8, "
        "16 or 32 of them."))

# %% [markdown]
# ## 2.4 Bitrate arithmetic
#
# EnCodec 24 kHz offers five bandwidths: 1.5, 3, 6, 12 and 24 kbps; VALL-E uses 6 kbps. Each bandwidth is a
# number of codebooks kept.
#
# ### Exercise 3: predict the bitrate
#
# Before running the next cell, fill in `prediction`: the bits per second of 8 codebooks of 1024 entries at 75
# frames per second, and how many codebooks each bandwidth keeps. The check asks EnCodec's quantizer
# (`get_num_quantizers_for_bandwidth`).
#
# **Expected:** the shipped guess counts the 1024 ids where it should count the bits an id takes, and keeps 8
# codebooks at every bandwidth: the check prints `✗ not yet`. The right numbers print `✓` and match the cell after.

# %%
prediction = {
    "bits_per_second": 8 * 1024 * 75,  # TODO: 8 codebooks × ? bits per id × 75 frames per second
    "codebooks": {1.5: 8, 3.0: 8, 6.0: 8, 12.0: 8, 24.0: 8},  # TODO: codebooks kept at each bandwidth (kbps)
}

from exercises.nb02 import check_bitrate

_ = report("bitrate prediction", check_bitrate, prediction)

# %%
bits_per_code = int(np.log2(CODEBOOK_SIZE))
bitrate = NUM_CODEBOOKS * bits_per_code * FRAME_RATE
pcm = SAMPLE_RATE * 16
print(f"{NUM_CODEBOOKS} codebooks x {bits_per_code} bits x {FRAME_RATE} frames/s = {bitrate} bit/s = {bitrate / 1000:g} kbps "
      f"(EnCodec target bandwidth: {ENCODEC_BANDWIDTH:g} kbps)")
print(f"16-bit PCM at 24 kHz: {pcm / 1000:g} kbps -> compression x{pcm / bitrate:g}")
print(f"this clip: {len(wav) * 2:,d} bytes of PCM vs {T * NUM_CODEBOOKS * bits_per_code // 8:,d} bytes of codes")
for kbps in (1.5, 3, 6, 12, 24):
    n_q = encodec.quantizer.get_num_quantizers_for_bandwidth(FRAME_RATE, kbps)  # EnCodec's own rule
    assert n_q == int(kbps * 1000 / (bits_per_code * FRAME_RATE))  # = kbps / (10 bits x 75 Hz)
    print(f"  {kbps:>4} kbps = {n_q:2d} codebooks")
print(f"\nWhat the language model sees per second of speech: {FRAME_RATE * NUM_CODEBOOKS} tokens. "
      f"The AR decoder generates {FRAME_RATE} of them one by one (q0); the NAR fills the other "
      f"{FRAME_RATE * (NUM_CODEBOOKS - 1)} in {NUM_CODEBOOKS - 1} parallel passes.")

# %% [markdown]
# ## 2.5 Decoding with Vocos
#
# `AudioCodec.decode_codes` looks up the 8 codebook vectors of each frame in Vocos's copy of EnCodec's
# codebooks, sums them to a 128-dimensional feature (the quantised encoder output $\hat{\mathbf{x}}_t$ of 2.3:
# the cell checks it), and lets Vocos predict the STFT magnitude and phase of each 320-sample hop; an inverse
# STFT gives exactly 320 samples per frame. Vocos replaces EnCodec's own convolutional decoder because it is
# faster and sounds better (Siuzdak 2023); the reference implementation decodes this way (bandwidth id 2 = 6 kbps).

# %%
with torch.inference_mode():
    features = codec.vocos.codes_to_features(codes[0].T.unsqueeze(1))  # [1, 128, T]: Σ_i C_i[q_i]
assert (features - quantized).norm() <= 1e-5 * quantized.norm()  # Vocos's input is RVQ's sum x̂ (to rounding)
decoded = codec.decode_codes(codes)  # float32 [320 * T]
print(f"Vocos's features equal the RVQ sum x̂; decoded {decoded.shape[0]} samples = {T} frames x {HOP}; "
      f"input had {len(wav)} (padded up to whole frames)")
display(Audio(decoded, rate=SAMPLE_RATE, normalize=True))
if RANDOM_WEIGHTS:
    print("Untrained Vocos: the decoded audio is noise of the right length, so no spectrogram is drawn; with the real "
          "weights (VALLEX_WEIGHTS_DIR) this cell draws the input's and the decoded audio's side by side.")
else:
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), sharey=True)
    for ax, signal, title in ((axes[0], wav, "input (espeak-ng)"), (axes[1], decoded, "EnCodec codes -> Vocos")):
        spec = torch.stft(torch.from_numpy(signal), n_fft=1024, hop_length=256, window=torch.hann_window(1024),
                          return_complex=True).abs()
        spec = 20 * np.log10(spec.numpy() + 1e-5)  # dB
        image = ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=spec.max() - 80, vmax=spec.max(),
                          extent=(0, len(signal) / SAMPLE_RATE, 0, SAMPLE_RATE / 2000))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("time (s)")
    axes[0].set_ylabel("frequency (kHz)")
    fig.colorbar(image, ax=axes, label="dB", pad=0.01)
    show(fig)

# %% [markdown]
# ### Hearing real codes
#
# The presets are real EnCodec codes, so the published Vocos turns them back into the recordings they came
# from. Where this machine has it, the cell plays one preset per language; where not, it says in one line how
# to get it. The paper's own samples are on its demo page, <https://vallex-demo.github.io/>.

# %%
vocos_codec = real_codec()  # the published EnCodec + Vocos, or None (never downloaded here)
if vocos_codec is None:
    hear(real.codes, None, label="the presets")  # one line: how to get the weights, and the demo page
else:
    for name in ("librispeech_2", "babara", "cafe"):
        preset = library.load(name)
        hear(preset.codes, vocos_codec, label=f"{name} ({preset.language}, {preset.seconds:.1f} s): "
                                               f"{ids_to_phonemes(preset.text_ids)}")

# %% [markdown]
# ## 2.6 What this means for the model
#
# * A **voice prompt** is just these codes (plus the phonemes of its transcript): `vallex.prompts.VoicePrompt`
#   stores `[1, T, 8]` codes, the format of the reference's `.npz` prompt files, which is exactly what the
#   presets above are. Notebook 4 uses a prompt; notebook 5 trains on the presets.
# * **Length** is time: 75 frames per second. The AR decoder must decide when to stop (an end-of-speech id
#   one past the last code), and generation is capped at a number of frames per text token (printed below).
# * The checkpoint never sees a waveform: text in, codes out; EnCodec and Vocos sit outside it.

# %%
from vallex.config import VallexConfig
from vallex.inference.ar import MAX_FRAMES_PER_TEXT_TOKEN

eos = VallexConfig.named("public").eos_id
assert eos == CODEBOOK_SIZE  # "one past the last code"
print(f"{MAX_FRAMES_PER_TEXT_TOKEN} frames per text token = {MAX_FRAMES_PER_TEXT_TOKEN / FRAME_RATE * 1000:.0f} ms "
      "of audio per phoneme at most")
print("end-of-speech id:", eos)
