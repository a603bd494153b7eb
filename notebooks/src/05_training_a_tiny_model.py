# %% [markdown]
# # 5. Training a tiny VALL-E X on the CPU
#
# VALL-E X is trained like a language model: **teacher forcing** on pairs of (phonemes, EnCodec codes) of
# the same utterance, no aligner and no speaker labels (VALL-E §4.2; VALL-E X §3 trains on speech
# recognition-style data of each language, so no bilingual speakers are needed). Each step computes two
# cross-entropy losses:
#
# * **AR**: predict codebook 0 of frame *t* from the text and frames < *t* (input `[BOS] + q0`, target
#   `q0 + [EOS]`, causal mask): next-token prediction, including *when to stop*;
# * **NAR**: pick one stage *s* ∈ 1..7 at random and predict codebook *s* of every frame from the text and
#   codebooks 0..*s*−1; the first few frames (a random-length acoustic *prompt*) carry all 8 codebooks,
#   which is how the model learns to copy a voice from a prompt.
#
# This notebook runs the whole recipe of `vallex.training` at toy scale: a corpus of a few sentences spoken
# by espeak-ng, data preparation, a few hundred optimiser steps of a 2-layer model, loss curves, and then
# the question that matters: **does the model reproduce the codes it was trained on?**
#
# > **Runs offline in well under a minute, with random codec weights.** Without `VALLEX_WEIGHTS_DIR` the
# > corpus is encoded by an untrained EnCodec (`vallex.weights.random_weights.random_codec()`), so the codes are deterministic
# > functions of the audio but do not sound like it; the model is trained from scratch either way. With
# > `VALLEX_WEIGHTS_DIR` pointing at the real EnCodec weights, the same cells encode real codes. Training
# > the full-size model, or fine-tuning the public checkpoint (`init_checkpoint`), follows the same steps on
# > a GPU (`vallex/training/README.md`, `vallex train --help`).

# %%
import io
import os
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # render off-screen; figures are embedded as PNG below
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Image, display

from vallex.audio.codec import AudioCodec
from vallex.config import VallexConfig
from vallex.inference.decoding import NARInput, ar_decode, nar_decode
from vallex.model import VallexModel, count_parameters
from vallex.training.dataset import CodesDataset, collate
from vallex.training.espeak_corpus import ENGLISH_SENTENCES, MANDARIN_SENTENCES, write_espeak_corpus
from vallex.training.forward import training_forward
from vallex.training.prepare import prepare_dataset, scan_folder
from vallex.training.trainer import TrainConfig, train
from vallex.weights.checkpoint import load_model
from vallex.weights.random_weights import random_codec

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto, imported by vocos
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # jieba's import, harmless


def show(fig) -> None:
    """Embed a matplotlib figure in the notebook output as a PNG and free it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    display(Image(buffer.getvalue()))


workdir = Path(tempfile.mkdtemp(prefix="vallex-nb05-"))
WEIGHTS_DIR = os.environ.get("VALLEX_WEIGHTS_DIR")
codec = AudioCodec.from_dir(WEIGHTS_DIR) if WEIGHTS_DIR else random_codec(seed=0)
RANDOM_CODEC = codec.paths is None or codec.paths.random  # a make_random_weights folder is random too
print("codec:", "RANDOM EnCodec (offline demo)" if RANDOM_CODEC else WEIGHTS_DIR)

# %% [markdown]
# ## 5.1 A tiny bilingual corpus
#
# Two English and two Mandarin sentences, spoken by espeak-ng, in the folder layout the data preparation
# reads (`<language>/<id>.wav` + `<id>.txt`). Real corpora (LibriTTS, WenetSpeech, ...) use the same layout
# or a CSV/JSONL recording list.

# %%
corpus = workdir / "corpus"
wavs = write_espeak_corpus(corpus, {"en": ENGLISH_SENTENCES[:2], "zh": MANDARIN_SENTENCES[:2]})
for wav in wavs:
    print(wav.relative_to(corpus), "|", wav.with_suffix(".txt").read_text(encoding="utf-8").strip())

# %% [markdown]
# ## 5.2 Data preparation
#
# `prepare_dataset` does the expensive work once: text → phoneme ids and per-token language ids (the
# front end of notebook 1), audio → EnCodec codes `[T, 8]` (notebook 2), written into memory-mapped
# shards with an `index.json`. Training then never touches audio or G2P again.

# %%
data_dir = workdir / "prepared"
report = prepare_dataset(scan_folder(corpus), data_dir, codec, progress=False)
print(report.summary())
dataset = CodesDataset(data_dir)
print("languages (model rows):", dataset.languages)
for i in range(len(dataset)):
    u = dataset[i]
    print(f"{u.id:10s} text {len(u.text):3d} tokens, codes {tuple(u.codes.shape)} = {len(u.codes) / 75:.2f} s")

# %% [markdown]
# One padded batch and one teacher-forced forward of an untrained model. The AR loss starts near
# ln(1025) ≈ 6.9 nats per frame, a uniform guess over 1024 codes + EOS. The NAR loss of stages 1-6 starts
# much higher: their output layers share weights with NAR input embeddings (notebook 3, section 3.6), which
# `nn.Embedding` initialises with unit variance, so the first logits are large and confidently wrong; the
# untied last stage starts at the uniform value.

# %%
batch = collate([dataset[i] for i in range(len(dataset))])
print("batch: text", tuple(batch.text.shape), "codes", tuple(batch.codes.shape), "frames", batch.code_lens.tolist())
torch.manual_seed(0)
untrained = VallexModel(VallexConfig.tiny())
with torch.no_grad():
    for stage in (1, 3, 7):
        out = training_forward(untrained, batch, nar_stage=stage, prefix_len=10)
        print(f"untrained: AR {out.ar_loss.item() / out.ar_targets:.2f} nats/frame, "
              f"NAR stage {stage} {out.nar_ce.item() / out.nar_targets:.2f} nats/frame")
print(f"ln(1025) = {np.log(1025):.2f}")

# %% [markdown]
# ## 5.3 Training
#
# `train(TrainConfig(...))` is what `vallex train` runs: duration-bucketed batches, AdamW, warm-up +
# cosine learning rate, gradient clipping, checkpoints in the reference format (`{"model": state_dict}`,
# loadable by `load_model` and the app). `stage="both"` trains the AR and the NAR together (the
# reference's stage 0), with `loss = (AR + NAR) / 2`. The toy settings (no dropout, a high learning rate,
# every utterance in every batch) are chosen to *memorise* four utterances quickly, not to generalise.

# %%
config = TrainConfig(
    data=str(data_dir), out_dir=str(workdir / "run"), model="tiny", stage="both",
    max_steps=400, batch_size=4, lr=3e-3, warmup_steps=20, schedule="cosine",
    dropout=0.0, valid_fraction=0.0, log_every=50, valid_every=10_000, save_every=10_000, seed=0,
)
rows = []
start = time.perf_counter()
result = train(config, on_step=lambda step, row: rows.append(row))
elapsed = time.perf_counter() - start
print(f"{result.step} steps in {elapsed:.1f} s ({1000 * elapsed / result.step:.0f} ms/step) -> {result.last_checkpoint.name}")
print(f"first step: AR {rows[0]['ar_loss']:.2f}, NAR {rows[0]['nar_loss']:.2f};  "
      f"last step: AR {rows[-1]['ar_loss']:.2f}, NAR {rows[-1]['nar_loss']:.2f} nats/frame")

# %%
def smooth(values: list[float], width: int = 15) -> np.ndarray:
    """Running mean (the NAR loss jumps from step to step because each step trains a random stage)."""
    values = np.asarray(values, dtype=float)
    kernel = np.ones(width) / width
    return np.convolve(np.pad(values, (width // 2, width - 1 - width // 2), mode="edge"), kernel, mode="valid")


steps = [row["step"] for row in rows]
fig, axes = plt.subplots(1, 2, figsize=(12, 3.4))
for key, color, label in (("ar_loss", "tab:blue", "AR (codebook 0)"), ("nar_loss", "tab:orange", "NAR (random stage)")):
    values = [row[key] for row in rows]
    axes[0].plot(steps, values, color=color, alpha=0.25, lw=0.8)
    axes[0].plot(steps, smooth(values), color=color, label=label)
axes[0].set_yscale("log")
axes[0].set_xlabel("step")
axes[0].set_ylabel("cross-entropy (nats per frame)")
axes[0].set_title("training losses (faint: every step; solid: running mean)", fontsize=10)
axes[0].legend()
for key, color, label in (("ar_top10", "tab:blue", "AR"), ("nar_top10", "tab:orange", "NAR")):
    axes[1].plot(steps, smooth([row[key] for row in rows]), color=color, label=label)
axes[1].set_ylim(0, 1.02)
axes[1].set_xlabel("step")
axes[1].set_ylabel("top-10 accuracy")
twin = axes[1].twinx()
twin.plot(steps, [row["lr"] for row in rows], color="gray", ls=":", label="learning rate")
twin.set_ylabel("learning rate", color="gray")
axes[1].set_title("targets among the 10 most likely codes; dotted: learning rate", fontsize=10)
axes[1].legend(loc="center right")
show(fig)

# %% [markdown]
# ## 5.4 Does it reproduce its training codes?
#
# We load the final checkpoint exactly as the app would (`load_model`), then, for every training
# utterance, synthesise from its **text alone** (no prompt):
#
# * the AR decoder, greedy (`top_k=1`), must produce codebook 0 frame by frame *and stop at the right
#   frame*;
# * the NAR decoder, given the true codebook 0, must fill codebooks 1..7 (its errors compound: stage *s*
#   reads its own predictions of earlier stages).
#
# A fair yardstick is the **majority baseline**: always guessing each codebook's most frequent code in
# that utterance (random-codec codes are dominated by a few values, so it is high).

# %%
trained = load_model(result.last_checkpoint).eval()
print(f"loaded {result.last_checkpoint.name}: {count_parameters(trained):,d} parameters")
rows_out = []
examples = {}
for i in range(len(dataset)):
    u = dataset[i]
    text, langs = torch.from_numpy(u.text)[None], torch.from_numpy(u.langs)[None]  # [1, S]
    truth = torch.from_numpy(u.codes)[None]  # [1, T, 8]
    no_prompt = truth[:, :0]  # [1, 0, 8]
    ar = ar_decode(trained, text, langs, no_prompt[..., 0], top_k=1)
    codes1_7 = nar_decode(trained, [NARInput(text, langs, no_prompt, truth[..., 0])])[0]  # NAR from the true codebook 0
    n = min(ar.codes.shape[1], truth.shape[1])
    ar_acc = (ar.codes[0, :n] == truth[0, :n, 0]).float().mean().item()
    nar_acc = (codes1_7[0, :, 1:] == truth[0, :, 1:]).float().mean().item()
    majority = [torch.bincount(truth[0, :, j]).max().item() / truth.shape[1] for j in range(8)]
    rows_out.append((u.id, truth.shape[1], ar.codes.shape[1], ar.stop_reason, ar_acc, majority[0], nar_acc,
                     float(np.mean(majority[1:]))))
    examples[u.id] = (truth[0], ar.codes[0], codes1_7[0])

print(f"{'utterance':10s} {'frames':>6s} {'AR made':>7s} {'stop':>6s} {'AR acc':>7s} {'(maj.)':>7s} {'NAR acc':>8s} {'(maj.)':>7s}")
for uid, frames, made, stop, ar_acc, maj0, nar_acc, maj in rows_out:
    print(f"{uid:10s} {frames:6d} {made:7d} {stop:>6s} {ar_acc:7.0%} {maj0:7.0%} {nar_acc:8.0%} {maj:7.0%}")

# %%
uid = rows_out[0][0]
truth, ar_codes, nar_codes = examples[uid]
n = min(len(ar_codes), len(truth))
fig, axes = plt.subplots(3, 1, figsize=(11, 4.6), sharex=True, constrained_layout=True)
axes[0].imshow(truth.T.numpy(), aspect="auto", cmap="nipy_spectral", interpolation="nearest", vmin=0, vmax=1023)
axes[0].set_title(f"{uid}: training codes (8 codebooks)", fontsize=10)
axes[1].imshow(nar_codes.T.numpy(), aspect="auto", cmap="nipy_spectral", interpolation="nearest", vmin=0, vmax=1023)
axes[1].set_title("row 0: true codebook 0 given to the NAR; rows 1-7: NAR predictions", fontsize=10)
match = np.zeros((2, len(truth)))
match[0, :n] = (ar_codes[:n] == truth[:n, 0]).numpy()
match[1] = (nar_codes[:, 1:] == truth[:, 1:]).float().mean(-1).numpy()
axes[2].imshow(match, aspect="auto", cmap="RdYlGn", vmin=0, vmax=1, interpolation="nearest")
axes[2].set_yticks([0, 1], ["AR q0 correct", "NAR share\ncorrect"])
axes[2].set_xlabel("frame (75 per second)")
axes[2].set_title(f"green: reproduced. AR made {len(ar_codes)} frames for {len(truth)} true frames", fontsize=10)
show(fig)

# %% [markdown]
# After a few hundred steps the AR decoder typically reproduces codebook 0 from the text alone, well above
# the majority baseline, and stops on the right frame: it has learnt both the content and the timing of
# its training set. The NAR lags behind: it trains one of seven stages per step, and the codebooks carrying
# the most detail (1-2) need thousands of steps, as the loss curve still falling at the end suggests.
# At real scale these are exactly the two things that must *generalise* instead: thousands of hours of
# speech in each language (the paper trains on LibriLight English and WenetSpeech Mandarin) and days of
# GPU time.
#
# Next steps: `vallex prepare-data --folder DIR --out DATA` and `vallex train --data DATA --out RUN`
# run the same code from the command line; `init_checkpoint` fine-tunes the public model, and
# `vallex.text.EspeakFrontend` with `init_language_from` adds a language (notebook 1, section 1.6).
