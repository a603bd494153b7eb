# %% [markdown]
# # 2. Codec tokens: speech as 8 streams of integers at 75 Hz
#
# A language model needs a vocabulary. VALL-E (Wang et al. 2023, [arXiv 2301.02111](https://arxiv.org/abs/2301.02111),
# §3 "Background: Speech Quantization") takes it from a neural audio codec, **EnCodec** (Défossez et al.
# 2022, [arXiv 2210.13438](https://arxiv.org/abs/2210.13438)): a convolutional encoder turns 24 kHz audio into
# one 128-dimensional vector every 320 samples (75 per second), and **residual vector quantisation** (RVQ)
# writes each vector as 8 integers from 8 codebooks of 1024 entries. VALL-E X
# ([arXiv 2303.03926](https://arxiv.org/abs/2303.03926), §3) keeps exactly this representation for every
# language: the acoustic tokens are language-independent, only the text side changes.
#
# The public checkpoint's outputs are turned back into sound by **Vocos** (Siuzdak 2023,
# [arXiv 2306.00814](https://arxiv.org/abs/2306.00814)), a vocoder trained on the same EnCodec tokens, as the
# reference implementation does.
#
# > **Two kinds of codes in this notebook.** The real EnCodec weights cannot be downloaded here, so the codec
# > that runs is **untrained** (`vallex.weights.random_weights.random_codec()`: the real architecture, codebooks
# > filled from a test signal). It shows every shape, the frame rate and the RVQ mechanics, but its codes and its
# > decoded audio mean nothing. What real codes look like comes from **real speech encoded by the real
# > EnCodec**: 14 voice presets of the reference implementation (`notebooks/data/presets`, MIT; 2-4 s each of
# > English, Mandarin and Japanese). Each figure says which kind it shows. Point `VALLEX_WEIGHTS_DIR` at the
# > real EnCodec and Vocos (`vallex download --weights-dir DIR`) and the codec cells use them too.
#
# The input audio is synthetic speech from espeak-ng, made on the spot.

# %%
import os
import subprocess
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Audio, display
from tutorial import draw_codes, presets, show

from vallex.audio import FRAME_RATE, HOP, SAMPLE_RATE, load_audio
from vallex.audio.codec import CODEBOOK_SIZE, ENCODEC_BANDWIDTH, NUM_CODEBOOKS
from vallex.text import ids_to_phonemes
from vallex.weights import pretrained_codec
from vallex.weights.random_weights import random_codec

torch.set_num_threads(1)
torch.manual_seed(0)
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto, imported by vocos

WEIGHTS_DIR = os.environ.get("VALLEX_WEIGHTS_DIR")
codec = pretrained_codec(WEIGHTS_DIR) if WEIGHTS_DIR else random_codec(seed=0)
RANDOM_WEIGHTS = codec.paths is None or codec.paths.random  # a make_random_weights folder is random too
print("codec weights:", "RANDOM (untrained: codes and decoded audio mean nothing)" if RANDOM_WEIGHTS else WEIGHTS_DIR)

# %% [markdown]
# ## 2.1 Input speech
#
# espeak-ng writes 22.05 kHz WAV; `vallex.audio.load_audio` is the single door every recording goes
# through: mono, resampled to 24 kHz, float32 in [-1, 1].

# %%
workdir = Path(tempfile.mkdtemp(prefix="vallex-nb02-"))
wav_path = workdir / "speech.wav"
subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav_path),
                "Speech becomes tokens, and tokens become speech again."], check=True)
wav = load_audio(wav_path)
print(f"{len(wav)} samples at {SAMPLE_RATE} Hz = {len(wav) / SAMPLE_RATE:.2f} s, peak {np.abs(wav).max():.2f}")
display(Audio(wav, rate=SAMPLE_RATE))

# %% [markdown]
# ## 2.2 Encoding: `[N] samples → [1, T, 8]` codes
#
# `AudioCodec.encode_audio` runs EnCodec at 6 kbps. One frame covers 320 samples (13.3 ms), so
# T = ⌈N / 320⌉. Each frame gets 8 codes, one per codebook, each in 0..1023. We call the codebooks q0 … q7, as
# the library does: q0 is the first, the one the AR decoder will predict. The figure zooms into a tenth of
# a second: the bands alternate grey and white, one per frame, and above each are the 8 integers that stand for
# its 320 samples.

# %%
codes = codec.encode_audio(wav)  # LongTensor [1, T, 8]
T = codes.shape[1]
print("codes", tuple(codes.shape), codes.dtype, f"range {int(codes.min())}..{int(codes.max())}")
print(f"T = ceil({len(wav)} / {HOP}) = {-(-len(wav) // HOP)}; frame rate {SAMPLE_RATE} / {HOP} = {FRAME_RATE} Hz")

first = int(np.argmax(np.abs(wav) > 0.1)) // HOP  # the first frame with speech in it
shown = range(first, first + 7)
fig, ax = plt.subplots(figsize=(11, 3.2))
t_ms = np.arange(shown[0] * HOP, (shown[-1] + 1) * HOP) / SAMPLE_RATE * 1000
ax.plot(t_ms, wav[shown[0] * HOP:(shown[-1] + 1) * HOP], lw=0.8, color="tab:blue")
for k, frame in enumerate(shown):
    start = frame * HOP / SAMPLE_RATE * 1000
    if k % 2 == 0:
        ax.axvspan(start, start + HOP / SAMPLE_RATE * 1000, color="0.9", zorder=0)
    ax.text(start + 6.7, 1.02, "\n".join(str(int(c)) for c in codes[0, frame]), ha="center", va="bottom",
            fontsize=7, family="monospace", transform=ax.get_xaxis_transform())
ax.set_xlabel("time (ms): 7 frames of 320 samples = 13.3 ms each")
ax.set_ylabel("sample value")
ax.set_title("each frame of audio becomes 8 code ids (q0-q7 top to bottom; untrained codec: arbitrary ids)",
             fontsize=10, pad=92)
show(fig)

# %% [markdown]
# ### What real codes look like
#
# The codes of the untrained codec above are arbitrary. Here are those of **real speech through the real
# EnCodec**: a 3-second English preset, all 8 codebooks. A code id is a *name* (entry 17 of a codebook is no
# more like entry 18 than like entry 900), so the figure gives each id an arbitrary colour of its own rather
# than a colour scale; what it shows is *where codes repeat and where they change*. They change at almost
# every frame, in every codebook: at 13.3 ms per frame even a steady vowel is written with changing ids, so
# codec ids are not "letters" of speech the way phonemes are letters of text.

# %%
library = presets()
real = library.load("librispeech_2")  # VoicePrompt: codes [1, T, 8], transcript ids, language
print(f"{real.name}: {real.seconds:.2f} s of real {real.language} speech, codes {tuple(real.codes.shape)}")
print("transcript (phonemes):", ids_to_phonemes(real.text_ids))
fig, ax = plt.subplots(figsize=(11, 2.6))
draw_codes(ax, real.codes[0].T.numpy(), seconds=True)
ax.set_yticks(range(NUM_CODEBOOKS), [f"q{j}" for j in range(NUM_CODEBOOKS)])
ax.set_ylabel("codebook")
ax.set_title(f"real EnCodec codes of real speech ({real.name}): one colour per code id, colours carry no order",
             fontsize=10)
show(fig)
changes = (real.codes[0, 1:] != real.codes[0, :-1]).float().mean(0)  # [8]
print("share of frames whose code differs from the previous frame's, per codebook:",
      " ".join(f"{c:.0%}" for c in changes.tolist()))

# %% [markdown]
# How much of each codebook's vocabulary does speech use, and how evenly? Over all 14 presets (about
# 3,300 frames of real speech), per codebook: the number of distinct ids, and the **entropy** of their
# frequencies (10 bits would be all 1024 ids equally often). Next to it, the codes of our espeak-ng clip
# under the untrained codec, as a warning: its q0 uses a handful of ids, a side effect of untrained
# codebooks, not a property of EnCodec.

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


real_frames = np.concatenate([library.load(name).codes[0].numpy() for name in library.names()])  # [F, 8]
real_distinct, real_entropy = usage(real_frames)
clip_distinct, clip_entropy = usage(codes[0].numpy())
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

# %% [markdown]
# Real speech uses most of every codebook: several hundred distinct ids in each, about 8 bits of entropy,
# q0 a little less than the others. That is what the models face: the AR picks q0 among 1024 ids at every one
# of 75 frames a second, and the NAR the 7 others.
#
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

# %% [markdown]
# One codebook of 8 entries can only place 8 points on the ring; two place 64, four 4096, and the error
# shrinks with every stage because each new codebook was trained on exactly the error left so far. EnCodec
# does the same in 128 dimensions with 1024 entries per codebook: 8 codebooks = 80 bits per frame.
#
# The same procedure, now with EnCodec's own quantizer layers: we run the 8 stages by hand on the encoder's
# output and check that we reproduce `encode_audio` exactly.

# %%
encodec = codec.encodec
with torch.inference_mode():
    embedding = encodec.encoder(torch.from_numpy(wav).view(1, 1, -1))  # [1, 128, T]
    residual = embedding
    manual_codes, codec_norms = [], [1.0]
    for layer in encodec.quantizer.vq.layers[:NUM_CODEBOOKS]:
        indices = layer.encode(residual)  # [1, T]: nearest codebook entry per frame
        residual = residual - layer.decode(indices)  # what this codebook could not express
        manual_codes.append(indices)
        codec_norms.append((residual.norm() / embedding.norm()).item())
manual = torch.stack(manual_codes, dim=-1)  # [1, T, 8]
print("encoder output", tuple(embedding.shape), "- RVQ by hand equals encode_audio:", torch.equal(manual, codes))

fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(range(stages + 1), toy_norms, "o-", label="2-D ring, codebooks trained by k-means (above)")
ax.plot(range(NUM_CODEBOOKS + 1), codec_norms, "s--", color="tab:gray",
        label="EnCodec here: UNTRAINED codebooks" if RANDOM_WEIGHTS else "EnCodec (real weights)")
ax.set_xlabel("codebooks used")
ax.set_ylabel("‖residual‖ / ‖input‖")
ax.set_ylim(0, 1.1)
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
ax.set_title("what is left after each codebook", fontsize=10)
show(fig)

# %% [markdown]
# The trained toy RVQ shrinks its residual at every stage. The untrained codec's codebooks were never fitted
# to anything, so after the first one or two entries they no longer reduce the residual: the mechanics above
# are EnCodec's, the shrinking is something only training gives (the real EnCodec's residual shrinks with
# every codebook, which is why its bitrate can be chosen by keeping 2, 4, 8, 16 or 32 of them).
#
# ## 2.4 Bitrate arithmetic
#
# Each code is one of 1024 = 2¹⁰ values, i.e. 10 bits. EnCodec 24 kHz offers 1.5, 3, 6, 12 and 24 kbps,
# i.e. 2, 4, 8, 16 and 32 codebooks; VALL-E uses 6 kbps.

# %%
bits_per_code = int(np.log2(CODEBOOK_SIZE))
bitrate = NUM_CODEBOOKS * bits_per_code * FRAME_RATE
pcm = SAMPLE_RATE * 16
print(f"{NUM_CODEBOOKS} codebooks x {bits_per_code} bits x {FRAME_RATE} frames/s = {bitrate} bit/s = {bitrate / 1000:g} kbps "
      f"(EnCodec target bandwidth: {ENCODEC_BANDWIDTH:g} kbps)")
print(f"16-bit PCM at 24 kHz: {pcm / 1000:g} kbps -> compression x{pcm / bitrate:g}")
print(f"this clip: {len(wav) * 2:,d} bytes of PCM vs {T * NUM_CODEBOOKS * bits_per_code // 8:,d} bytes of codes")
for kbps in (1.5, 3, 6, 12, 24):
    n_q = int(kbps * 1000 / (bits_per_code * FRAME_RATE))
    print(f"  {kbps:>4} kbps = {n_q:2d} codebooks")
print(f"\nWhat the language model sees per second of speech: {FRAME_RATE * NUM_CODEBOOKS} tokens. "
      f"The AR decoder generates {FRAME_RATE} of them one by one (q0); the NAR fills the other "
      f"{FRAME_RATE * (NUM_CODEBOOKS - 1)} in {NUM_CODEBOOKS - 1} parallel passes.")

# %% [markdown]
# ## 2.5 Decoding with Vocos
#
# `AudioCodec.decode_codes` looks up the 8 codebook vectors of each frame in Vocos's copy of EnCodec's
# codebooks, sums them to a 128-dimensional feature (the quantised encoder output), and lets Vocos predict
# the STFT magnitude and phase of each 320-sample hop; an inverse STFT gives exactly 320 samples per
# frame. Vocos replaces EnCodec's own convolutional decoder because it is faster and sounds better
# (Siuzdak 2023); the reference implementation decodes this way (bandwidth id 2 = 6 kbps).

# %%
decoded = codec.decode_codes(codes)  # float32 [320 * T]
print(f"decoded {decoded.shape[0]} samples = {T} frames x {HOP}; input had {len(wav)} (padded up to whole frames)")
display(Audio(decoded, rate=SAMPLE_RATE, normalize=True))
if RANDOM_WEIGHTS:
    print("Untrained Vocos: the decoded audio is noise of the right length; no spectrogram of it is worth a look.")
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
# With the real weights the two spectrograms look alike: harmonics, formants and pauses survive 64×
# compression.
#
# ## 2.6 What this means for the model
#
# * A **voice prompt** is just these codes (plus the phonemes of its transcript): `vallex.prompts.VoicePrompt`
#   stores `[1, T, 8]` codes, the format of the reference's `.npz` prompt files, which is exactly what the
#   presets above are. Notebook 4 uses a prompt; notebook 5 trains on the presets.
# * **Length** is time: 75 frames per second. The AR decoder must decide when to stop (an end-of-speech id,
#   1024, one past the last code), and the reference caps generation at 16 frames per text token.
# * The checkpoint never sees a waveform: text in, codes out; EnCodec and Vocos sit outside it.

# %%
seconds_per_token = 16 / FRAME_RATE
print(f"16 frames per text token = {seconds_per_token * 1000:.0f} ms of audio per phoneme at most")
print("end-of-speech id:", CODEBOOK_SIZE)
