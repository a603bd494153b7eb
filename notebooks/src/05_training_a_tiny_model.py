# %% [markdown]
# # 5. Training a tiny VALL-E X on real speech codes
#
# VALL-E X is trained like a language model: **teacher forcing** on pairs of (phonemes, EnCodec codes) of
# the same utterance, no aligner and no speaker labels (VALL-E §4.2; VALL-E X §3 trains on speech
# recognition-style data of each language, so no bilingual speakers are needed). Each step computes two
# cross-entropy losses:
#
# * **AR**: predict q0 (the first codebook) of frame *t* from the text and frames < *t*: input `[BOS] + q0`, target
#   `q0 + [EOS]`, causal mask. Next-token prediction, including *when to stop*;
# * **NAR**: pick one stage *s* ∈ 1..7 at random and predict codebook *s* (q*s*) of every frame from the text
#   and codebooks q0..q*s*−1; the first few frames (a random-length acoustic *prompt*) carry all 8 codebooks,
#   which is how the model learns to copy a voice from a prompt.
#
# This notebook runs the whole recipe of `vallex.training` at toy scale: one training step written by hand
# and checked against the library, a few hundred optimiser steps of a 2-layer model, loss curves on the
# training set and on two held-out utterances, and then the questions that matter: **does the model reproduce
# what it was trained on, and what does it do with a sentence it has never seen?**
#
# > **Real speech codes, a toy model.** The corpus is 12 of the reference implementation's voice presets
# > (`notebooks/data/presets`, MIT): real English, Mandarin and Japanese speech already encoded by the real
# > EnCodec, with their transcripts' phoneme ids, 36 s in all. So the codes are the real thing, but the model
# > (1.2 M parameters, 450 steps, ~30 s on one CPU thread) is chosen to *memorise* them, not to generalise.
# > Notebook 6 decodes this same model. Training the full-size model, or fine-tuning the public checkpoint
# > (`init_checkpoint`), follows the same steps on a GPU (`vallex/training/README.md`, `vallex train --help`).

# %%
import csv
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
import tutorial
from tutorial import draw_codes, draw_token_grid, show, token_grid_legend, token_states

from vallex.config import VallexConfig
from vallex.inference.ar import ar_decode
from vallex.inference.nar import NARInput, nar_decode
from vallex.model import VallexModel, ar_attention_mask, count_parameters
from vallex.text import ids_to_phonemes
from vallex.training.dataset import CodesDataset, collate
from vallex.training.forward import training_forward
from vallex.training.prepare import prepare_prompts
from vallex.weights.checkpoint import load_model

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # jieba's import, harmless

# %% [markdown]
# ## 5.1 A tiny corpus of real speech
#
# A voice preset is exactly a training example: EnCodec codes `[1, T, 8]`, the phoneme ids of its transcript
# and its language (`vallex.prompts.VoicePrompt`, read from the reference's `.npz` files by
# `PresetLibrary`). Twelve are the training set; two English ones are held out and never trained on.

# %%
library = tutorial.presets()
print(f"{'preset':14s} {'lang':4s} {'seconds':>7s} {'frames':>6s} {'tokens':>6s}  transcript (phonemes)")
for split, names in (("train", tutorial.TRAIN_PRESETS), ("held out", tutorial.HELD_OUT_PRESETS)):
    print(f"-- {split}")
    for name in names:
        p = library.load(name)
        print(f"{name:14s} {p.language:4s} {p.seconds:7.2f} {p.num_frames:6d} {len(p.text_ids):6d}  "
              f"{ids_to_phonemes(p.text_ids)[:60]}")

# %% [markdown]
# ## 5.2 Data preparation
#
# Training never touches audio or G2P: `vallex prepare-data` (`prepare_dataset`) turns recordings and
# transcripts into memory-mapped shards of codes and phoneme ids once. Our utterances are codes already, so
# `prepare_prompts` writes them into the same format without a codec. `CodesDataset` reads it back.
# (`tutorial.train_tiny_model`, used below and by notebook 6, prepares the same folders itself.)

# %%
data_dir = tutorial.tutorial_dir() / "train"
prepare_prompts((library.load(name) for name in tutorial.TRAIN_PRESETS), data_dir)
dataset = CodesDataset(data_dir)
print(f"{len(dataset)} utterances, {sum(dataset.frames)} frames; language rows: {dataset.languages}")
u = dataset[0]
print(f"{u.id}: text {u.text.shape} ids, langs {u.langs.shape} (row {u.langs[0]} = {dataset.languages[u.langs[0]]}), "
      f"codes {u.codes.shape}")

# %% [markdown]
# ## 5.3 One training step, by hand
#
# `collate` pads four utterances into one batch (text with 0, codes with 0). On the grid of notebook 3 the two
# losses look like this: the AR predicts **all** of row q0 in one pass, each frame from the true frames before
# it (the causal mask makes that honest), and the NAR predicts one whole row below a random-length prompt
# whose frames carry every codebook.

# %%
batch = collate([dataset[i] for i in range(4)])
print("batch: text", tuple(batch.text.shape), "codes", tuple(batch.codes.shape), "frames", batch.code_lens.tolist(),
      "tokens", batch.text_lens.tolist())
STAGE, PREFIX = 3, 40  # the NAR stage and prompt length this step would draw at random

fig, axes = plt.subplots(1, 2, figsize=(12, 2.4))
draw_token_grid(axes[0], token_states(0, 12, ar_step=0, teacher_forcing=True), 0,
                "AR, teacher forcing: every q0 frame at once, each from the true ones before it")
draw_token_grid(axes[1], token_states(4, 8, nar_stage=STAGE), 4,
                f"NAR, stage {STAGE}: the first frames are the prompt (all 8 codebooks)")
token_grid_legend(fig)
show(fig)

# %% [markdown]
# **The AR part.** Inputs are `[BOS] + q0`, targets `q0 + [EOS]`: position *t*'s output is scored against frame
# *t* + 1, and the position after the last frame against end-of-speech, which is how the model learns to stop.
# Padding frames read EOS and are not scored (the recipe's `ar_loss_on_padding=False`). The mask is the AR
# mask of notebook 3 with the padded keys hidden.

# %%
torch.manual_seed(0)
model = VallexModel(VallexConfig.tiny())  # untrained, as at step 0
cfg = model.config
text, text_langs, codes = batch.text, batch.text_langs, batch.codes  # [B, S], [B, S], [B, T, 8]
B, S, T = text.shape[0], text.shape[1], codes.shape[1]
audio_pad = torch.arange(T)[None] >= batch.code_lens[:, None]  # [B, T]: True on padding frames
text_pad = torch.arange(S)[None] >= batch.text_lens[:, None]  # [B, S]

q0 = codes[..., 0].masked_fill(audio_pad, cfg.eos_id)  # [B, T]: padding frames read EOS
ar_inputs = torch.cat([torch.full((B, 1), cfg.bos_id), q0], dim=1)  # [B, T+1]: [BOS] + q0
ar_targets = torch.cat([q0, torch.full((B, 1), cfg.eos_id)], dim=1)  # [B, T+1]: q0 + [EOS]
beyond = torch.arange(T + 1)[None] > batch.code_lens[:, None]  # after each utterance's own EOS
ar_targets = ar_targets.masked_fill(beyond, -100)  # -100: not scored
keys = torch.cat([~text_pad, torch.ones(B, 1, dtype=torch.bool), ~audio_pad], dim=1)  # [B, S+T+1]: real keys
mask = ar_attention_mask(S, T + 1)[None] & keys[:, None, :]  # [B, L, L]

x = torch.cat([model.embed_text("ar", text, text_langs), model.embed_ar_audio(ar_inputs)], dim=1)  # [B, L, D]
logits = model.ar_logits(model.ar_decoder(x, mask[:, None])[:, S:])  # [B, T+1, 1025]
ar_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ar_targets.reshape(-1), ignore_index=-100,
                          reduction="sum")
print("inputs of utterance 0:  ", ar_inputs[0, :6].tolist(), "...")
print("targets of utterance 0: ", ar_targets[0, :6].tolist(), "...",
      ar_targets[0, batch.code_lens[0] - 2:batch.code_lens[0] + 2].tolist())

# %% [markdown]
# **The NAR part.** At stage *s* every frame carries the sum of its embeddings of q0..q*s*−1; the first
# `PREFIX` frames (the prompt) carry all eight. The NAR decoder (full attention, the stage embedding in every
# adaptive norm) then predicts q*s* of the frames after the prompt. The summed loss is scaled by
# frames / (frames − prompt frames) so that its size does not depend on the drawn prompt length.

# %%
codes_in = torch.cat([q0[..., None], codes[..., 1:]], dim=-1)  # [B, T, 8]: q0 with EOS on padding, as the AR reads
in_prompt = (torch.arange(T) < PREFIX)[None, :, None]  # [1, T, 1]
audio_emb = model.nar_audio_embeddings[0](codes_in[..., 0])  # [B, T, D]
for j in range(1, 8):
    e = model.nar_audio_embeddings[j](codes_in[..., j])
    audio_emb = audio_emb + (e if j < STAGE else e * in_prompt)  # codebook j only where it is known
hidden = model.nar_forward(model.embed_text("nar", text, text_langs), audio_emb, STAGE - 1,
                           torch.cat([text_pad, audio_pad], dim=1))  # [B, T, D]: the audio positions
nar_logits = model.nar_predict_layers[STAGE - 1](hidden[:, PREFIX:])  # [B, T-PREFIX, 1024]
nar_targets = codes[:, PREFIX:, STAGE].masked_fill(audio_pad[:, PREFIX:], -100)
frames = int(batch.code_lens.sum())
nar_loss = F.cross_entropy(nar_logits.reshape(-1, 1024), nar_targets.reshape(-1), ignore_index=-100,
                           reduction="sum") * frames / (frames - PREFIX * B)

library_out = training_forward(model, batch, nar_stage=STAGE, prefix_len=PREFIX, ar_loss_on_padding=False)
print(f"AR loss  by hand {ar_loss.item():10.3f}   training_forward {library_out.ar_loss.item():10.3f}")
print(f"NAR loss by hand {nar_loss.item():10.3f}   training_forward {library_out.nar_loss.item():10.3f}")
assert torch.allclose(ar_loss, library_out.ar_loss, rtol=1e-5) and torch.allclose(nar_loss, library_out.nar_loss, rtol=1e-5)
print(f"per frame: AR {ar_loss.item() / frames:.2f} nats (uniform over 1025 ids: ln 1025 = {np.log(1025):.2f}), "
      f"NAR {nar_loss.item() / frames:.2f} nats")

# %% [markdown]
# The step's loss is `(AR + NAR) / 2` per frame; `backward()`, gradient clipping and an AdamW update finish
# the step. The untrained AR starts near ln 1025, a uniform guess. The NAR starts much higher: the output
# layers of stages 1-6 share their weights with NAR input embeddings (notebook 3, section 3.8), which
# `nn.Embedding` initialises with unit variance, so the first logits are large and confidently wrong.
#
# ## 5.4 Training
#
# `train(TrainConfig(...))` is what `vallex train` runs: duration-bucketed batches, AdamW, warm-up + cosine
# learning rate, gradient clipping, checkpoints in the reference format (loadable by `load_model` and the
# app), and a validation loss on the held-out utterances. The recipe (`tutorial.tiny_model_recipe`, shared
# with notebook 6):

# %%
root = tutorial.tutorial_dir()
recipe = tutorial.tiny_model_recipe(root / "train", root / "valid", root / "run")
for field in ("model", "stage", "max_steps", "batch_size", "lr", "warmup_steps", "schedule", "dropout",
              "valid_every", "save_every", "seed"):
    print(f"{field:13s} {getattr(recipe, field)}")
print(f"model: {count_parameters(model):,d} parameters")

# %% [markdown]
# A run resumes from its folder, so if notebook 6 (or an earlier run of this one) already trained it, this
# returns at once; the logs in the run folder hold every step either way. Delete the folder
# (`tutorial.tutorial_dir()`) to train again.

# %%
start = time.perf_counter()
result = tutorial.train_tiny_model()
print(f"the run is at step {result.step} ({time.perf_counter() - start:.1f} s in this call)")


def read_csv(path) -> dict[str, np.ndarray]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {key: np.array([float(row[key]) for row in rows]) for key in rows[0]}


log, valid = read_csv(result.out_dir / "log.csv"), read_csv(result.out_dir / "valid.csv")
print(f"training took {log['seconds'][-1]:.0f} s ({1000 * log['seconds'][-1] / len(log['step']):.0f} ms/step)")
print(f"first step: AR {log['ar_loss'][0]:.2f}, NAR {log['nar_loss'][0]:.2f};  last step: AR {log['ar_loss'][-1]:.2f}, "
      f"NAR {log['nar_loss'][-1]:.2f} nats/frame")
print("held-out AR loss at steps", valid["step"].astype(int).tolist(), ":", np.round(valid["ar_loss"], 2).tolist())


# %%
def smooth(values: np.ndarray, width: int = 15) -> np.ndarray:
    """Running mean (the NAR loss jumps from step to step because each step trains a random stage)."""
    kernel = np.ones(width) / width
    return np.convolve(np.pad(values, (width // 2, width - 1 - width // 2), mode="edge"), kernel, mode="valid")


fig, axes = plt.subplots(1, 2, figsize=(12, 3.4))
for key, color, label in (("ar_loss", "tab:blue", "AR (q0)"), ("nar_loss", "tab:orange", "NAR (random stage)")):
    axes[0].plot(log["step"], log[key], color=color, alpha=0.2, lw=0.8)
    axes[0].plot(log["step"], smooth(log[key]), color=color, label=f"{label}, training batches")
    axes[0].plot(valid["step"], valid[key], "o--", color=color, ms=4, label=f"{label}, held-out utterances")
axes[0].set_yscale("log")
axes[0].set_xlabel("step")
axes[0].set_ylabel("cross-entropy (nats per frame)")
axes[0].set_title("losses: training (faint: every step; solid: running mean) and held out", fontsize=10)
axes[0].legend(fontsize=8)
for key, color, label in (("ar_top10", "tab:blue", "AR"), ("nar_top10", "tab:orange", "NAR")):
    axes[1].plot(log["step"], smooth(log[key]), color=color, label=label)
axes[1].set_ylim(0, 1.02)
axes[1].set_xlabel("step")
axes[1].set_ylabel("top-10 accuracy (training batches)")
twin = axes[1].twinx()
twin.plot(log["step"], log["lr"], color="gray", ls=":")
twin.set_ylabel("learning rate (dotted)", color="gray")
axes[1].set_title("targets among the 10 most likely codes", fontsize=10)
axes[1].legend(loc="center right")
show(fig)

# %% [markdown]
# The training AR loss falls by two orders of magnitude. The **held-out** AR loss falls at first (the model
# learns what is common to all speech codes, such as silence) and then rises, ending above ln 1025 ≈ 6.9, worse
# than a uniform guess: the model is memorising its 12 utterances, not learning to read. The NAR's training
# loss falls far less: each step trains one of its seven stages, so each stage saw about 65 steps.
#
# ## 5.5 Does it reproduce its training codes?
#
# We load the final checkpoint exactly as the app would (`load_model`), then, for every training
# utterance, synthesise from its **text alone** (no prompt):
#
# * the AR decoder, greedy (`top_k=1`), must produce q0 frame by frame *and stop at the right frame*;
# * the NAR decoder, given the true q0, must fill q1..q7 (its errors compound: stage *s* reads its own
#   predictions of earlier stages).
#
# A fair yardstick is the **majority baseline**: always guessing each codebook's most frequent code in that
# utterance (for real speech that is usually a silence code).

# %%
trained = load_model(result.last_checkpoint).eval()
print(f"loaded {result.last_checkpoint.name}: {count_parameters(trained):,d} parameters")


def utterance_tensors(u) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """text, langs [1, S] and codes [1, T, 8] of a prepared utterance."""
    return torch.from_numpy(u.text)[None], torch.from_numpy(u.langs)[None], torch.from_numpy(u.codes)[None]


rows_out, examples = [], {}
for i in range(len(dataset)):
    u = dataset[i]
    text, langs, truth = utterance_tensors(u)
    ar = ar_decode(trained, text, langs, truth[:, :0, 0], top_k=1)
    nar = nar_decode(trained, [NARInput(text, langs, truth[:, :0], truth[..., 0])])[0]  # NAR from the true q0
    n = min(ar.codes.shape[1], truth.shape[1])
    ar_acc = (ar.codes[0, :n] == truth[0, :n, 0]).float().mean().item()
    nar_acc = (nar[0, :, 1:] == truth[0, :, 1:]).float().mean().item()
    majority = [torch.bincount(truth[0, :, j]).max().item() / truth.shape[1] for j in range(8)]
    rows_out.append((u.id, truth.shape[1], ar.codes.shape[1], ar.stop_reason, ar_acc, majority[0], nar_acc,
                     float(np.mean(majority[1:]))))
    examples[u.id] = (truth[0], ar.codes[0], nar[0])

print(f"{'utterance':14s} {'frames':>6s} {'AR made':>7s} {'stop':>6s} {'AR acc':>7s} {'(maj.)':>7s} {'NAR acc':>8s} {'(maj.)':>7s}")
for uid, n_frames, made, stop, ar_acc, maj0, nar_acc, maj in rows_out:
    print(f"{uid:14s} {n_frames:6d} {made:7d} {stop:>6s} {ar_acc:7.0%} {maj0:7.0%} {nar_acc:8.0%} {maj:7.0%}")
exact = sum(made == n_frames and ar_acc > 0.95 for _, n_frames, made, _, ar_acc, _, _, _ in rows_out)
print(f"\n{exact} of {len(rows_out)} utterances: AR q0 right on > 95 % of frames and stopped on the right frame")

# %%
uid = rows_out[0][0]
truth, ar_codes, nar_codes = examples[uid]
n = min(len(ar_codes), len(truth))
fig, axes = plt.subplots(3, 1, figsize=(11, 4.8), sharex=True, constrained_layout=True)
draw_codes(axes[0], truth.T.numpy())
axes[0].set_yticks(range(0, 8, 2), [f"q{j}" for j in range(0, 8, 2)])
axes[1].set_yticks(range(0, 8, 2), [f"q{j}" for j in range(0, 8, 2)])
axes[0].set_title(f"{uid}: the training codes (8 codebooks, one colour per id)", fontsize=10)
draw_codes(axes[1], nar_codes.T.numpy())
axes[1].set_title("row q0: the true q0 given to the NAR; rows q1-q7: NAR predictions", fontsize=10)
match = np.full((2, len(truth)), np.nan)
match[0, :n] = (ar_codes[:n] == truth[:n, 0]).numpy()
match[1] = (nar_codes[:, 1:] == truth[:, 1:]).float().mean(-1).numpy()
image = axes[2].imshow(match, aspect="auto", cmap="RdYlGn", vmin=0, vmax=1, interpolation="nearest")
axes[2].set_yticks([0, 1], ["AR q0 right", "NAR: share of\nq1-q7 right"])
axes[2].set_xlabel("frame (75 per second)")
axes[2].set_title(f"green: reproduced. The AR made {len(ar_codes)} frames from the text alone; the truth has "
                  f"{len(truth)}", fontsize=10)
fig.colorbar(image, ax=axes[2], pad=0.01, label="share right")
for ax in axes[:2]:
    ax.set_xlabel("")
show(fig)

# %% [markdown]
# The AR reproduces q0 of its training utterances from the text alone, frame for frame, and stops on
# the right frame: it has memorised every code sequence, including its length. The NAR has not: given the
# true q0 it predicts nearly the same code in every frame of a row, is right at or below the majority
# baseline, and its few hits sit in the silence at the start and end of the utterance, where codes repeat.
# Sixty-five steps per stage are nowhere near enough for codebooks that each spread over ~8 bits of real
# speech (notebook 2).
#
# ## 5.6 A new sentence, and continuing a prompt
#
# Memorising is not reading. Two tests show the difference:
#
# * **held-out text**: a sentence it never trained on, from its text alone;
# * **continuation from a prompt**: the first second of an utterance (all 8 codebooks) is the prompt and the
#   whole transcript is the text, so the AR must continue where the prompt stops: VALL-E's zero-shot setting
#   (notebook 4), here with the prompt's own speaker and sentence (the paper's "continuation" task).

# %%
valid_set = CodesDataset(root / "valid")
PROMPT = 75  # frames: one second
cases = [("training", dataset[0]), ("held out", valid_set[0]), ("held out", valid_set[1])]
training_q0 = {dataset[i].id: torch.from_numpy(dataset[i].codes[:, 0]) for i in range(len(dataset))}


def closest_training_utterance(codes0: torch.Tensor) -> tuple[str, float]:
    """The training utterance whose q0 agrees with ``codes0`` [T] on the most frames (aligned at frame 0)."""
    shares = {uid: (q[:len(codes0)] == codes0[:len(q)]).float().mean().item() for uid, q in training_q0.items()}
    best = max(shares, key=shares.get)
    return best, shares[best]


fig, axes = plt.subplots(len(cases), 1, figsize=(11, 4.6), constrained_layout=True)
for ax, (split, u) in zip(axes, cases):
    text, langs, truth = utterance_tensors(u)
    alone = ar_decode(trained, text, langs, truth[:, :0, 0], top_k=1)
    continued = ar_decode(trained, text, langs, truth[:, :PROMPT, 0], top_k=1)
    if split == "held out":
        played, share = closest_training_utterance(alone.codes[0])
        print(f"{u.id} from its text alone: {alone.codes.shape[1]} frames, {share:.0%} of them equal to the "
              f"training utterance {played} ({len(training_q0[played])} frames)")
    length = truth.shape[1]
    rows = np.full((2, max(length, PROMPT + continued.codes.shape[1], alone.codes.shape[1])), np.nan)
    n = min(alone.codes.shape[1], length)
    rows[0, :n] = (alone.codes[0, :n] == truth[0, :n, 0]).numpy()
    m = min(continued.codes.shape[1], length - PROMPT)
    rows[1, :PROMPT] = 0.5  # the prompt itself: given, not predicted
    rows[1, PROMPT:PROMPT + m] = (continued.codes[0, :m] == truth[0, PROMPT:PROMPT + m, 0]).numpy()
    ax.imshow(rows, aspect="auto", cmap="RdYlGn", vmin=0, vmax=1, interpolation="nearest")
    ax.axvline(length - 0.5, color="black", lw=1.5)
    ax.set_yticks([0, 1], ["text alone", "1 s prompt +\ncontinuation"], fontsize=8)
    ax.set_title(f"{split}: {u.id} ({length} frames, black line). Text alone: {alone.codes.shape[1]} frames, "
                 f"q0 right on {rows[0, :n].mean():.0%}; continued: {PROMPT + continued.codes.shape[1]} frames, "
                 f"q0 right on {np.nanmean(rows[1, PROMPT:PROMPT + m]) if m else 0:.0%} after the prompt", fontsize=9)
axes[-1].set_xlabel("frame; green = the true q0, red = another code, yellow = the given prompt, "
                    "white = no true frame to compare with")
show(fig)

# %% [markdown]
# On a training utterance both work: the model recognises the sentence (or the prompt's opening second) and
# plays back what it memorised. On the held-out sentences it produces codes, and even stops, but almost none
# of them are the true ones, and from the text alone it plays back one of its *training* utterances instead,
# frame for frame (the lines printed above): it has learnt which code sequences go with which of its 12 transcripts,
# not how phonemes sound. The rising held-out loss of 5.4 said so before we decoded anything.
#
# At real scale the same recipe must *generalise*: thousands of hours of speech in each language (the paper
# trains on LibriLight English and WenetSpeech Mandarin) and days of GPU time. Notebook 6 decodes this tiny
# model at two points of its training to show why autoregressive TTS repeats itself, skips or never stops,
# and how decoding catches it.
#
# Next steps: `vallex prepare-data --folder DIR --out DATA` and `vallex train --data DATA --out RUN` run the
# same code from the command line; `init_checkpoint` fine-tunes the public model, and
# `vallex.text.EspeakFrontend` with `init_language_from` adds a language (notebook 1, section 1.6).
