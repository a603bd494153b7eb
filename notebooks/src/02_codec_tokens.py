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
# > **Runs offline with random weights.** Without `VALLEX_WEIGHTS_DIR`, EnCodec and Vocos have their real
# > architectures but untrained weights (`vallex.weights.random_weights.random_codec()`; the codebooks are filled
# > from a test signal so that codes vary). Frame rate, shapes, the RVQ mechanics and the bitrate arithmetic are real; the
# > decoded audio is **noise**. Point `VALLEX_WEIGHTS_DIR` at a folder with the real EnCodec and Vocos files
# > (`vallex download --weights-dir DIR`) and the same cells show real reconstructions.
#
# The input is synthetic speech from espeak-ng, made on the spot (no recordings are shipped).

# %%
import io
import os
import subprocess
import tempfile
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # render off-screen; figures are embedded as PNG below
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Audio, Image, display

from vallex.audio import FRAME_RATE, HOP, SAMPLE_RATE, load_audio
from vallex.audio.codec import CODEBOOK_SIZE, ENCODEC_BANDWIDTH, NUM_CODEBOOKS, AudioCodec
from vallex.weights.random_weights import random_codec

torch.set_num_threads(1)
torch.manual_seed(0)
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto, imported by vocos


def show(fig) -> None:
    """Embed a matplotlib figure in the notebook output as a PNG and free it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    display(Image(buffer.getvalue()))


def log_spectrogram(wav: np.ndarray) -> np.ndarray:
    """dB magnitude of a 1024-point STFT with hop 256: [513, frames]."""
    spec = torch.stft(torch.from_numpy(wav), n_fft=1024, hop_length=256, window=torch.hann_window(1024),
                      return_complex=True).abs()
    return 20 * np.log10(spec.numpy() + 1e-5)


WEIGHTS_DIR = os.environ.get("VALLEX_WEIGHTS_DIR")
codec = AudioCodec.from_dir(WEIGHTS_DIR) if WEIGHTS_DIR else random_codec(seed=0)
RANDOM_WEIGHTS = codec.paths is None or codec.paths.random  # a make_random_weights folder is random too
print("codec weights:", "RANDOM (offline demo: decoded audio is noise)" if RANDOM_WEIGHTS else WEIGHTS_DIR)

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
# T = ⌈N / 320⌉. Each frame gets 8 codes, one per codebook, each in 0..1023.

# %%
codes = codec.encode_audio(wav)  # LongTensor [1, T, 8]
T = codes.shape[1]
print("codes", tuple(codes.shape), codes.dtype, f"range {int(codes.min())}..{int(codes.max())}")
print(f"T = ceil({len(wav)} / {HOP}) = {-(-len(wav) // HOP)}; frame rate {SAMPLE_RATE} / {HOP} = {FRAME_RATE} Hz")
print("first 5 frames:\n", codes[0, :5].tolist())

fig, ax = plt.subplots(figsize=(11, 2.6))
image = ax.imshow(codes[0].T.numpy(), aspect="auto", cmap="nipy_spectral", interpolation="nearest",
                  extent=(0, T / FRAME_RATE, NUM_CODEBOOKS - 0.5, -0.5))
ax.set_xlabel("time (s)  -  one column per 13.3 ms frame")
ax.set_ylabel("codebook")
ax.set_title("EnCodec codes: 8 codebooks x T frames (colour = code 0..1023). "
             "The AR model predicts row 0, the NAR rows 1-7", fontsize=10)
fig.colorbar(image, ax=ax, pad=0.01)
show(fig)

# %% [markdown]
# ## 2.3 Residual vector quantisation, by hand
#
# RVQ quantises in stages: codebook 1 picks the entry closest to the encoder vector, codebook 2 the entry
# closest to what is *left over*, and so on. Each codebook therefore refines the previous ones, which is
# why VALL-E can split the work: the **first** codebook carries the coarse content (what is said, when,
# and the rough voice), the later ones add acoustic detail (VALL-E §3, §4.2). Below we run the 8 stages
# with EnCodec's own quantizer layers, check that we reproduce `encode_audio` exactly, and watch the
# residual shrink.

# %%
encodec = codec.encodec
with torch.inference_mode():
    embedding = encodec.encoder(torch.from_numpy(wav).view(1, 1, -1))  # [1, 128, T]
    residual = embedding
    manual_codes, residual_norms = [], [embedding.norm().item()]
    for layer in encodec.quantizer.vq.layers[:NUM_CODEBOOKS]:
        indices = layer.encode(residual)  # [1, T]: nearest codebook entry per frame
        residual = residual - layer.decode(indices)  # what this codebook could not express
        manual_codes.append(indices)
        residual_norms.append(residual.norm().item())
manual = torch.stack(manual_codes, dim=-1)  # [1, T, 8]
print("encoder output", tuple(embedding.shape), "- manual RVQ equals encode_audio:", torch.equal(manual, codes))

fig, ax = plt.subplots(figsize=(6, 2.8))
ax.plot(range(NUM_CODEBOOKS + 1), np.array(residual_norms) / residual_norms[0], "o-")
ax.set_xlabel("codebooks used")
ax.set_ylabel("‖residual‖ / ‖encoder output‖")
ax.set_title("RVQ: each codebook quantises what the previous ones left over", fontsize=10)
ax.set_ylim(0, 1.05)
ax.grid(alpha=0.3)
show(fig)

# %% [markdown]
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
      f"The AR decoder generates {FRAME_RATE} of them one by one (codebook 0); the NAR fills the other "
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

fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), sharey=True)
for ax, signal, title in ((axes[0], wav, "input (espeak-ng)"),
                          (axes[1], decoded, "EnCodec codes -> Vocos" + (" (random weights: noise)" if RANDOM_WEIGHTS else ""))):
    spec = log_spectrogram(signal)
    ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=spec.max() - 80, vmax=spec.max(),
              extent=(0, len(signal) / SAMPLE_RATE, 0, SAMPLE_RATE / 2000))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("time (s)")
axes[0].set_ylabel("frequency (kHz)")
show(fig)

# %% [markdown]
# With the real weights the two spectrograms look alike: harmonics, formants and pauses survive 64×
# compression. With random weights the right-hand side is noise, but its length (320 samples per frame)
# and the whole path are the real ones.
#
# ## 2.6 What this means for the model
#
# * A **voice prompt** is just these codes (plus the phonemes of its transcript): `vallex.prompts.VoicePrompt`
#   stores `[1, T, 8]` codes, the format of the reference's `.npz` prompt files. Notebook 4 uses one.
# * **Length** is time: 75 frames per second. The AR decoder must decide when to stop (an end-of-speech id,
#   1024, one past the last code), and the reference caps generation at 16 frames per text token.
# * The checkpoint never sees a waveform: text in, codes out; EnCodec and Vocos sit outside it.

# %%
seconds_per_token = 16 / FRAME_RATE
print(f"16 frames per text token = {seconds_per_token * 1000:.0f} ms of audio per phoneme at most")
print("end-of-speech id:", CODEBOOK_SIZE)
