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
# This notebook writes both losses and a whole training loop by hand, checks one step of it against the
# library (`vallex.training`), trains a 2-layer model with the library's trainer, and then asks the questions
# that matter: **does the model reproduce what it was trained on, what does it do with a sentence it has never
# seen, and does more data make it generalise?** Three exercises (marked ✎) ask you to write a piece yourself; a
# check cell says ✓ when it is right.
#
# > **Real speech codes, a toy model.** The corpus is 12 of the reference implementation's voice presets
# > (`notebooks/data/presets`, MIT): real English, Mandarin and Japanese speech already encoded by the real
# > EnCodec, with their transcripts' phoneme ids, 38 s in all (both numbers are asserted in 5.1). So the codes
# > are the real thing, but the model (1.2 M parameters, 450 steps on one CPU thread, asserted in 5.5) is
# > chosen to *memorise* them, not to generalise. Notebook 6 decodes this same model. Training the full-size
# > model, or fine-tuning the public checkpoint (`init_checkpoint`), follows the same steps on a GPU
# > (`vallex/training/README.md`, `vallex train --help`). What the real model sounds like: the paper's demo
# > page, https://vallex-demo.github.io/.

# %%
import csv
import dataclasses
import itertools
import math
import random
import tempfile
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
import tutorial
from IPython.display import Markdown, display
from tutorial import draw_codes, draw_token_grid, show, token_grid_legend, token_states

from vallex.audio.codec_format import CODEBOOK_SIZE, FRAME_RATE, NUM_CODEBOOKS
from vallex.config import VallexConfig
from vallex.inference.ar import ar_decode
from vallex.inference.nar import NARInput, nar_decode
from vallex.model import VallexModel, ar_attention_mask, count_parameters
from vallex.text import ids_to_phonemes
from vallex.training.dataset import BucketBatchSampler, CodesDataset, TrainingBatch, collate
from vallex.training.forward import training_forward
from vallex.training.prepare import prepare_prompts
from vallex.training.trainer import batch_draws, evaluate, learning_rate, train
from vallex.weights.checkpoint import load_model

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # jieba's import, harmless
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto in a kernel without widgets
assert (NUM_CODEBOOKS, CODEBOOK_SIZE, FRAME_RATE) == (8, 1024, 75)  # the numbers the prose uses

# %% [markdown]
# ## 5.1 A tiny corpus of real speech
#
# A voice preset is exactly a training example: EnCodec codes `[1, T, 8]`, the phoneme ids of its transcript
# and its language (`vallex.prompts.VoicePrompt`, read from the reference's `.npz` files by
# `PresetLibrary`). Twelve are the training set; two English ones are held out and never trained on.

# %%
library = tutorial.presets()
print(f"{'preset':14s} {'lang':4s} {'seconds':>7s} {'frames':>6s} {'tokens':>6s}  transcript (phonemes)")
seconds = {}
for split, names in (("train", tutorial.TRAIN_PRESETS), ("held out", tutorial.HELD_OUT_PRESETS)):
    print(f"-- {split}")
    for name in names:
        p = library.load(name)
        seconds[name] = p.seconds
        print(f"{name:14s} {p.language:4s} {p.seconds:7.2f} {p.num_frames:6d} {len(p.text_ids):6d}  "
              f"{ids_to_phonemes(p.text_ids)[:60]}")
train_seconds = sum(seconds[name] for name in tutorial.TRAIN_PRESETS)
print(f"training set: {len(tutorial.TRAIN_PRESETS)} utterances, {train_seconds:.1f} s; held out: "
      f"{len(tutorial.HELD_OUT_PRESETS)}, both English: "
      f"{all(library.load(n).language == 'en' for n in tutorial.HELD_OUT_PRESETS)}")
assert len(tutorial.TRAIN_PRESETS) == 12 and round(train_seconds) == 38 and len(tutorial.HELD_OUT_PRESETS) == 2

# %% [markdown]
# ## 5.2 Data preparation
#
# Training never touches audio or G2P: `vallex prepare-data` (`prepare_dataset`) turns recordings and
# transcripts into memory-mapped shards of codes and phoneme ids once. Our utterances are codes already, so
# `prepare_prompts` writes them into the same format without a codec. `CodesDataset` reads it back.
# (`tutorial.train_tiny_model`, used below and by notebook 6, prepares the same folders itself.)

# %%
root = tutorial.tutorial_dir()
prepare_prompts((library.load(name) for name in tutorial.TRAIN_PRESETS), root / "train")
prepare_prompts((library.load(name) for name in tutorial.HELD_OUT_PRESETS), root / "valid")
dataset, valid_set = CodesDataset(root / "train"), CodesDataset(root / "valid")
print(f"{len(dataset)} utterances, {sum(dataset.frames)} frames; language rows: {dataset.languages}")
u = dataset[0]
print(f"{u.id}: text {u.text.shape} ids, langs {u.langs.shape} (row {u.langs[0]} = {dataset.languages[u.langs[0]]}), "
      f"codes {u.codes.shape}")

# %% [markdown]
# ## 5.3 The two losses, written out
#
# VALL-E (§4.1-4.2) factorises the codes $\mathbf C$ ($T$ frames × 8 codebooks, entries $c_{t,j}$) of an utterance
# with phonemes $\mathbf x$ and an acoustic prompt $\tilde{\mathbf C}$ into an AR product over frames and a NAR
# product over codebooks. VALL-E X (§3) adds the language $\ell$ of the text, an embedding added to every
# phoneme's (`model.embed_text` adds `ar_language_embedding` / `nar_language_embedding`):
#
# $$p(\mathbf C \mid \mathbf x, \ell, \tilde{\mathbf C}) =
#   \underbrace{\prod_{t=1}^{T} p\big(c_{t,1} \mid c_{<t,1}, \tilde{\mathbf C}_{:,1}, \mathbf x, \ell;\ \theta_{AR}\big)}_{\text{AR: one frame at a time}}
#   \cdot \underbrace{\prod_{j=2}^{8} p\big(\mathbf c_{:,j} \mid \mathbf C_{:,<j}, \tilde{\mathbf C}, \mathbf x, \ell;\ \theta_{NAR}\big)}_{\text{NAR: one codebook at a time}}$$
#
# The paper counts codebooks from 1, the code from 0: $c_{:,1}$ is q0 and NAR stage $j$ predicts q$(j-1)$. Training
# maximises each factor's likelihood with teacher forcing. In training the AR has no separate prompt (an
# utterance's own earlier frames play that part), and the NAR's prompt is the first $P$ frames of the same
# utterance with all 8 codebooks. Summed over the utterances $b$ of a batch, with $F = \sum_b T_b$ its frames:
#
# $$\mathcal L_{AR} = -\sum_b \sum_{t=1}^{T_b+1} \log p\big(c^b_{t,1} \mid c^b_{<t,1}, \mathbf x^b, \ell^b\big),
#   \qquad c^b_{T_b+1,1} = \text{EOS}$$
#
# $$\mathcal L_{NAR} = -\frac{F}{F - B P} \sum_b \sum_{t=P+1}^{T_b}
#   \log p\big(c^b_{t,j} \mid \mathbf C^b_{:,<j},\ \mathbf C^b_{\le P,:},\ \mathbf x^b, \ell^b\big),
#   \qquad j \sim \mathcal U\{2, \dots, 8\},\ P \sim \mathcal U\{0, \dots, 2\lfloor \min_b T_b / 4 \rfloor - 1\}$$
#
# and a step minimises $(\mathcal L_{AR} + \mathcal L_{NAR}) / 2F$. Three details of `vallex.training` that the
# paper leaves open, all read off its code: $j$ and $P$ are drawn **once per batch** (every utterance in it
# trains the same NAR stage); both losses are **sums** over frames, divided once by the batch's frames; and the
# factor $F / (F - BP)$ makes the NAR's size independent of how many frames the prompt took.
#
# `collate` pads a batch (text with 0, codes with 0). On the grid of notebook 3 the two losses look like this:
# the AR predicts **all** of row q0 in one pass, each frame from the true frames before it (the causal mask
# makes that honest), and the NAR predicts one whole row below a random-length prompt whose frames carry every
# codebook.

# %%
batch = collate([dataset[i] for i in range(4)])
print("batch: text", tuple(batch.text.shape), "codes", tuple(batch.codes.shape), "frames", batch.code_lens.tolist(),
      "tokens", batch.text_lens.tolist())
STAGE, PREFIX = 3, 40  # the NAR stage (code's numbering: predicts q3, the paper's j = 4) and prompt length P

fig, axes = plt.subplots(1, 2, figsize=(12, 2.4))
draw_token_grid(axes[0], token_states(0, 12, ar_step=0, teacher_forcing=True), 0,
                "AR, teacher forcing: every q0 frame at once, each from the true ones before it")
draw_token_grid(axes[1], token_states(4, 8, nar_stage=STAGE), 4,
                f"NAR, stage {STAGE}: the first frames are the prompt (all 8 codebooks)")
token_grid_legend(fig)
show(fig)

# %% [markdown]
# **$\mathcal L_{AR}$, by hand.** Inputs are `[BOS] + q0`, targets `q0 + [EOS]`: position *t*'s output is scored
# against frame *t* + 1, and the position after the last frame against end-of-speech, which is how the model
# learns to stop. Padding frames read EOS and are not scored (the recipe's `ar_loss_on_padding=False`). The mask
# is the AR mask of notebook 3 with the padded keys hidden. Each line below carries the term it computes.
#
# **$\mathcal L_{NAR}$, by hand.** At stage *s* every frame carries the sum of its embeddings of q0..q*s*−1
# ($\mathbf C_{:,<j}$); the first `prefix` frames (the prompt $\mathbf C_{\le P,:}$) carry all eight. The NAR
# decoder (full attention, the stage embedding in every adaptive norm) then predicts q*s* of the frames after
# the prompt.

# %%
def paddings(batch: TrainingBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, S] and [B, T] masks, True on padding (text, then audio frames)."""
    S, T = batch.text.shape[1], batch.codes.shape[1]
    return torch.arange(S)[None] >= batch.text_lens[:, None], torch.arange(T)[None] >= batch.code_lens[:, None]


def ar_shift(batch: TrainingBatch, cfg: VallexConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """AR inputs [BOS] + q0 and targets q0 + [EOS], [B, T+1]; targets after each utterance's EOS are -100."""
    B, T = batch.codes.shape[:2]
    q0 = batch.codes[..., 0].masked_fill(paddings(batch)[1], cfg.eos_id)  # [B, T]: padding frames read EOS
    inputs = torch.cat([torch.full((B, 1), cfg.bos_id), q0], dim=1)  # c_{<t,1}: what position t sees
    targets = torch.cat([q0, torch.full((B, 1), cfg.eos_id)], dim=1)  # c_{t,1}, t = 1..T_b+1 (the last: EOS)
    return inputs, targets.masked_fill(torch.arange(T + 1)[None] > batch.code_lens[:, None], -100)  # -100: unscored


def ar_loss_by_hand(model: VallexModel, batch: TrainingBatch) -> torch.Tensor:
    """L_AR: -sum over utterances and t of log p(c_{t,1} | c_{<t,1}, x, l), a 0-dim tensor."""
    (text_pad, audio_pad), (B, S), T = paddings(batch), batch.text.shape, batch.codes.shape[1]
    inputs, targets = ar_shift(batch, model.config)
    keys = torch.cat([~text_pad, torch.ones(B, 1, dtype=torch.bool), ~audio_pad], dim=1)  # [B, S+T+1]: real keys
    mask = ar_attention_mask(S, T + 1)[None] & keys[:, None, :]  # [B, L, L]: text both ways, audio causal
    x = torch.cat([model.embed_text("ar", batch.text, batch.text_langs),  # x and l: phoneme + language embedding
                   model.embed_ar_audio(inputs)], dim=1)  # [B, S+T+1, D]
    logits = model.ar_logits(model.ar_decoder(x, mask[:, None])[:, S:])  # [B, T+1, 1025]: log p(. | c_{<t,1}, x, l)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100,
                           reduction="sum")  # -sum log p(c_{t,1} | ...)


def nar_loss_by_hand(model: VallexModel, batch: TrainingBatch, stage: int, prefix: int) -> torch.Tensor:
    """L_NAR of stage ``stage`` (predicts q{stage}, the paper's j = stage + 1) with a ``prefix``-frame prompt."""
    (text_pad, audio_pad), (B, T) = paddings(batch), batch.codes.shape[:2]
    codes = torch.cat([ar_shift(batch, model.config)[0][:, 1:, None], batch.codes[..., 1:]], dim=-1)  # q0: EOS on padding
    in_prompt = (torch.arange(T) < prefix)[None, :, None]  # [1, T, 1]: the frames of C_{<=P,:}
    audio_emb = model.nar_audio_embeddings[0](codes[..., 0])  # [B, T, D]
    for j in range(1, NUM_CODEBOOKS):
        e = model.nar_audio_embeddings[j](codes[..., j])
        audio_emb = audio_emb + (e if j < stage else e * in_prompt)  # C_{:,<j} everywhere, the rest in the prompt
    hidden = model.nar_forward(model.embed_text("nar", batch.text, batch.text_langs), audio_emb, stage - 1,
                               torch.cat([text_pad, audio_pad], dim=1))  # [B, T, D]: the audio positions
    logits = model.nar_predict_layers[stage - 1](hidden[:, prefix:])  # [B, T-P, 1024]: t = P+1..T_b
    targets = batch.codes[:, prefix:, stage].masked_fill(audio_pad[:, prefix:], -100)  # c_{t,j}
    frames = int(batch.code_lens.sum())  # F
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum")
    return ce * (frames / (frames - prefix * B))  # F / (F - BP): the same size whatever the prompt took


_ = torch.manual_seed(0)
model = VallexModel(VallexConfig.tiny())  # untrained, as at step 0
cfg = model.config
inputs, targets = ar_shift(batch, cfg)
print("inputs of utterance 0:  ", inputs[0, :6].tolist(), "...")
print("targets of utterance 0: ", targets[0, :6].tolist(), "...",
      targets[0, batch.code_lens[0] - 2:batch.code_lens[0] + 2].tolist())
ar_loss, nar_loss = ar_loss_by_hand(model, batch), nar_loss_by_hand(model, batch, STAGE, PREFIX)
library_out = training_forward(model, batch, nar_stage=STAGE, prefix_len=PREFIX, ar_loss_on_padding=False)
print(f"AR loss  by hand {ar_loss.item():10.3f}   training_forward {library_out.ar_loss.item():10.3f}")
print(f"NAR loss by hand {nar_loss.item():10.3f}   training_forward {library_out.nar_loss.item():10.3f}")
assert torch.allclose(ar_loss, library_out.ar_loss, rtol=1e-5) and torch.allclose(nar_loss, library_out.nar_loss, rtol=1e-5)
frames = int(batch.code_lens.sum())
print(f"per frame: AR {ar_loss.item() / frames:.2f} nats (uniform over 1025 ids: ln 1025 = {np.log(1025):.2f}), "
      f"NAR {nar_loss.item() / frames:.2f} nats")
# What the next paragraph says of these numbers:
assert batch.size == 4 and abs(ar_loss.item() / frames - np.log(1025)) < 0.5 and nar_loss > 2 * ar_loss

# %% [markdown]
# The untrained AR starts near ln 1025, a uniform guess over its 1025 classes (1024 codes and EOS). The NAR
# starts much higher: the output layers of stages 1-6 share their weights with NAR input embeddings (notebook
# 3, section 3.8), which `nn.Embedding` initialises with unit variance, so the first logits are large and
# confidently wrong.
#
# ## 5.4 A training loop, by hand
#
# A step is: draw $j$ and $P$, compute $(\mathcal L_{AR} + \mathcal L_{NAR}) / 2F$, backpropagate, **clip** the
# gradient to norm 1 (a rare huge gradient cannot throw the weights far), and let **AdamW** update the weights
# at the step's **learning rate**: a linear warm-up (Adam's moment estimates are noisy for the first steps, so
# big steps then would be blind), then a half cosine down to 5 % of the peak. Weight decay (0.01) applies to
# matrices only, and the two positional-encoding scales of the NAR stay frozen, as in the reference. That is
# all of `vallex.training`'s step on one CPU, in a few lines:

# %%
FROZEN = ("nar_text_position.alpha", "nar_audio_position.alpha")  # the reference never trains these two scalars


def lr_at(step: int, base: float, warmup: int, total: int, floor: float = 0.05) -> float:
    """Learning rate of step ``step`` (0-based): linear warm-up to ``base``, then a half cosine to floor * base."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def adamw_for(model: VallexModel, lr: float) -> tuple[torch.optim.AdamW, list[torch.nn.Parameter]]:
    """AdamW over the trained parameters, weight decay on matrices only (decaying norms' gains only fights them)."""
    for name, p in model.named_parameters():
        p.requires_grad_(name not in FROZEN)
    params = [p for name, p in model.named_parameters() if name not in FROZEN]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.01},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8), params


def step_by_hand(model: VallexModel, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter],
                 batch: TrainingBatch, lr: float, stage: int, prefix: int) -> dict[str, float]:
    """One optimiser step; returns the losses per frame and the gradient norm before clipping."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    frames = int(batch.code_lens.sum())  # F
    ar, nar = ar_loss_by_hand(model, batch), nar_loss_by_hand(model, batch, stage, prefix)
    ((ar + nar) / (2 * frames)).backward()  # (L_AR + L_NAR) / 2F
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm=1.0)  # all gradients scaled together if norm > 1
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)  # the 6 NAR stages not drawn get no gradient, hence no update
    return {"ar": ar.item() / frames, "nar": nar.item() / frames, "grad_norm": grad_norm.item()}


def train_by_hand(model: VallexModel, data: CodesDataset, steps: int, *, lr: float, warmup: int, seed: int = 0,
                  on_step=None) -> list[dict[str, float]]:
    """``steps`` steps over ``data`` in batches of up to 4 similar-length utterances (the trainer's sampler)."""
    optimizer, params = adamw_for(model, lr)
    sampler = BucketBatchSampler(data.frames, batch_size=4, seed=seed)
    batches = itertools.chain.from_iterable(sampler.batches(epoch) for epoch in itertools.count())
    rng, rows = random.Random(seed), []
    for step, ids in zip(range(steps), batches):
        batch = collate([data[i] for i in ids])
        stage = rng.randint(1, NUM_CODEBOOKS - 1)  # j - 1: one NAR stage per batch, uniform
        prefix = rng.randrange(2 * (int(batch.code_lens.min()) // 4))  # P: up to half the shortest utterance
        rows.append(step_by_hand(model, optimizer, params, batch, lr_at(step, lr, warmup, steps), stage, prefix))
        if on_step is not None:
            on_step(step + 1, model)
    return rows


# %% [markdown]
# **Is it the library's step?** The recipe trained below (`tutorial.tiny_model_recipe`) starts from
# `torch.manual_seed(seed)` and the tiny model, takes its first batch from the same bucketing sampler, and
# draws its NAR stage and prompt length from generators seeded by (seed, step) (the trainer's `batch_draws`, which
# makes every DDP rank draw alike). We give our step exactly those and compare it with one step of
# `vallex.training.train`: the losses, the gradient norm, and every weight afterwards.

# %%
recipe = tutorial.tiny_model_recipe(root / "train", root / "valid", root / "run")
assert all(math.isclose(lr_at(s, recipe.lr, recipe.warmup_steps, recipe.max_steps), learning_rate(recipe, s, 0))
           for s in range(recipe.max_steps))  # our schedule is the library's, at every step of the recipe
ids = BucketBatchSampler(dataset.frames, recipe.batch_size, seed=recipe.seed).batches(0)[0]  # the first batch
first = collate([dataset[i] for i in ids])
draws = batch_draws(recipe, 0, 0, [dataset.frames[i] for i in ids], NUM_CODEBOOKS)  # the trainer's j - 1 and P

_ = torch.manual_seed(recipe.seed)
mine = VallexModel(VallexConfig.named(recipe.model))  # the trainer's initial weights
before = {name: value.clone() for name, value in mine.state_dict().items()}
optimizer, params = adamw_for(mine, recipe.lr)
ours = step_by_hand(mine, optimizer, params, first, lr_at(0, recipe.lr, recipe.warmup_steps, recipe.max_steps),
                    draws["nar_stage"], draws["prefix_len"])

rows = []
with tempfile.TemporaryDirectory() as scratch:
    one = train(dataclasses.replace(recipe, out_dir=scratch, max_steps=1), on_step=lambda step, row: rows.append(row))
    theirs = load_model(one.last_checkpoint).state_dict()
row, after = rows[0], mine.state_dict()
weight_gap = max((after[k] - theirs[k]).abs().max().item() for k in after)
update = max((after[k] - before[k]).abs().max().item() for k in after)
moved = sum(not torch.equal(after[k], before[k]) for k in after)
print(f"step 1 on utterances {[dataset[i].id for i in ids]}: NAR stage {draws['nar_stage']}, prompt "
      f"{draws['prefix_len']} frames, learning rate {row['lr']:.2e}")
print(f"{'':26s} {'by hand':>10s} {'vallex.training':>16s}")
for label, a, b in (("AR loss per frame", ours["ar"], row["ar_loss"]), ("NAR loss per frame", ours["nar"], row["nar_loss"]),
                    ("gradient norm (unclipped)", ours["grad_norm"], row["grad_norm"])):
    print(f"{label:26s} {a:10.5f} {b:16.5f}")
print(f"weights after the step: {moved} of {len(after)} tensors moved, by up to {update:.2e}; "
      f"largest difference from the library's weights {weight_gap:.1e}")
assert math.isclose(ours["ar"], row["ar_loss"], rel_tol=1e-5) and math.isclose(ours["nar"], row["nar_loss"], rel_tol=1e-5)
assert math.isclose(ours["grad_norm"], row["grad_norm"], rel_tol=1e-4) and weight_gap < 1e-3 * update
assert ours["grad_norm"] > 1 and row["lr"] <= update < 1.1 * row["lr"]  # what the next paragraph says

# %% [markdown]
# Same losses, same gradient norm, same weights (the gap is rounding in the last bits). Two things show in the
# numbers: the gradient norm is above 1, so clipping scaled the gradient down; and no weight moved by much more
# than the learning rate (the little more is weight decay). That is Adam's first step: with $m = (1-\beta_1) g$ and $v = (1-\beta_2) g^2$, bias
# correction gives $\hat m / \sqrt{\hat v} = g / |g| = \pm 1$, so every weight with a gradient moves by the
# learning rate, whatever the gradient's size (and clipping, which scales all gradients alike, changes nothing
# here). Later steps average over gradients of different batches and take smaller, more careful steps.
#
# ### ✎ Exercise 1: the reference's learning rate
#
# lifeiteng/vall-e, the trainer the public checkpoint comes from, used Eden (from icefall) instead of a cosine:
# it never reaches a floor, decaying as the inverse fourth root of both steps and epochs, and warms up from half
# the rate:
#
# $$\text{lr}(s, e) = \text{base} \cdot \Big(\frac{s^2 + S^2}{S^2}\Big)^{-1/4} \Big(\frac{e^2 + E^2}{E^2}\Big)^{-1/4}
#   \cdot w(s), \qquad w(s) = \begin{cases} 0.5 + 0.5\, s / \text{warmup} & s < \text{warmup} \\ 1 & \text{otherwise}\end{cases}$$
#
# with $S$ = `lr_batches` and $E$ = `lr_epochs`. Write it (`vallex train --schedule eden` is the library's).

# %%
def eden_lr(step: int, epoch: int, base: float = 0.05, lr_batches: int = 5000, lr_epochs: float = 4.0,
            warmup: int = 200) -> float:
    return base  # ✎ replace: Eden's decay in steps and epochs, and its warm-up


# %%
from exercises import report  # noqa: E402 - the exercises' checks come in where they are used
from exercises.nb05 import check_adamw_update, check_eden_lr, check_unigram_loss  # noqa: E402

_ = report("Eden learning rate", check_eden_lr, eden_lr)

# %% [markdown]
# **Expected:** `✓` once your function gives `vallex.training.learning_rate` with `schedule="eden"` at every
# step and epoch the check tries (three settings of base, $S$, $E$ and warm-up). As shipped, it says which step
# differs.
#
# ### ✎ Exercise 2: one AdamW update
#
# `torch.optim.AdamW` did the update above. Write it for one tensor: with gradient $g$, step count $t$ (from 1),
#
# $$m \leftarrow \beta_1 m + (1-\beta_1) g, \quad v \leftarrow \beta_2 v + (1-\beta_2) g^2, \quad
#   \theta \leftarrow \theta (1 - \text{lr}\,\lambda) - \text{lr}\, \frac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon}$$
#
# The decay $\lambda$ acts on the weights directly, not through the gradient: that is the "W" of AdamW (in Adam
# it would be divided by $\sqrt{v}$ like the rest, so weights with large gradients would hardly decay).

# %%
def adamw_update(param, grad, exp_avg, exp_avg_sq, step, lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01):
    """Return the new (param, exp_avg, exp_avg_sq)."""
    return param - lr * grad, exp_avg, exp_avg_sq  # ✎ replace: plain gradient descent, no moments, no decay


# %%
_ = report("AdamW update", check_adamw_update, adamw_update)

# %% [markdown]
# **Expected:** `✓` once four updates of a random tensor with your function match `torch.optim.AdamW`'s (the
# weights and both moments). As shipped, gradient descent moves the weights by `lr × g`, not by about `lr`.
#
# ## 5.5 Training with `vallex.training`
#
# `train(TrainConfig(...))` is what `vallex train` runs: duration-bucketed batches, AdamW, warm-up + cosine
# learning rate, gradient clipping (the step above), checkpoints in the reference format (loadable by
# `load_model` and the app), and a validation loss on the held-out utterances. The recipe
# (`tutorial.tiny_model_recipe`, shared with notebook 6):

# %%
for field in ("model", "stage", "max_steps", "batch_size", "lr", "warmup_steps", "schedule", "dropout",
              "valid_every", "save_every", "seed"):
    print(f"{field:13s} {getattr(recipe, field)}")
print(f"model: {count_parameters(model):,d} parameters, {cfg.num_layers} layers of width {cfg.d_model}")
assert recipe.max_steps == 450 and round(count_parameters(model) / 1e6, 1) == 1.2 and cfg.num_layers == 2

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
print(f"training took {log['seconds'][-1]:.0f} s ({1000 * log['seconds'][-1] / len(log['step']):.0f} ms/step) "
      "on one thread of this machine")
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

fold = log["ar_loss"][0] / log["ar_loss"][-1]
best = int(valid["ar_loss"].argmin())
nar_fold = log["nar_loss"][0] / log["nar_loss"][-1]
assert fold > 10 * nar_fold and valid["ar_loss"][best] < log["ar_loss"][0] and best < len(valid["step"]) - 1
assert valid["ar_loss"][-1] > np.log(1025)
display(Markdown(
    f"The training AR loss falls {fold:.0f}-fold, from {log['ar_loss'][0]:.2f} to {log['ar_loss'][-1]:.2f} nats per "
    f"frame. The **held-out** AR loss falls at first (to {valid['ar_loss'][best]:.2f} at step {valid['step'][best]:.0f}: "
    "the model learns what is common to all speech codes, such as silence) and then rises, ending at "
    f"{valid['ar_loss'][-1]:.2f}, above ln 1025 = {np.log(1025):.2f}: worse than a uniform guess. The model is "
    f"memorising its {len(dataset)} utterances, not learning to read. The NAR's training loss falls only "
    f"{nar_fold:.1f}-fold: each step trains one of its {NUM_CODEBOOKS - 1} stages, so each stage saw about "
    f"{recipe.max_steps / (NUM_CODEBOOKS - 1):.0f} steps."))

# %% [markdown]
# ## 5.6 Does it reproduce its training codes?
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
nar_mean, majority_mean = np.mean([r[6] for r in rows_out]), np.mean([r[7] for r in rows_out])
bits = np.mean([np.log2(len(np.unique(np.concatenate([dataset[i].codes[:, j] for i in range(len(dataset))]))))
                for j in range(1, NUM_CODEBOOKS)])
print(f"\n{exact} of {len(rows_out)} utterances: AR q0 right on > 95 % of frames and stopped on the right frame")
print(f"NAR: right on {nar_mean:.0%} of q1-q7 codes on average; the majority baseline on {majority_mean:.0%}. "
      f"Each of q1-q7 uses 2^{bits:.1f} distinct codes in these {sum(dataset.frames)} frames; each NAR stage "
      f"trained about {recipe.max_steps / (NUM_CODEBOOKS - 1):.0f} steps")
assert exact == len(rows_out) and nar_mean < majority_mean + 0.03 and bits > np.log2(200)  # the prose below

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
# true q0 it predicts nearly the same code in every frame of a row, is right about as often as the majority
# baseline or less (the numbers printed above), and its few hits sit in the silence at the start and end of the
# utterance, where codes repeat. A few dozen steps per stage are nowhere near enough for codebooks that each
# spread over hundreds of codes.
#
# **Listen.** With the published Vocos on this machine, the two players below are the training codes and what
# the model made of them from the text (its q0, which is the true one, and its NAR's q1-q7); without it, one
# line says how to get it.

# %%
codec = tutorial.real_codec()  # None unless `vallex download` has put the real EnCodec + Vocos here
tutorial.hear(truth, codec, label=f"{uid}: the training utterance's own codes")
if codec is not None:
    tutorial.hear(nar_codes, codec, label=f"{uid}: the tiny model's q0 and its NAR's q1-q7")

# %% [markdown]
# ## 5.7 A new sentence, and continuing a prompt
#
# Memorising is not reading. Two tests show the difference:
#
# * **held-out text**: a sentence it never trained on, from its text alone;
# * **continuation from a prompt**: the first second of an utterance (all 8 codebooks) is the prompt and the
#   whole transcript is the text, so the AR must continue where the prompt stops: VALL-E's zero-shot setting
#   (notebook 4), here with the prompt's own speaker and sentence (the paper's "continuation" task).

# %%
PROMPT = FRAME_RATE  # frames: one second
cases = [("training", dataset[0]), ("held out", valid_set[0]), ("held out", valid_set[1])]
training_q0 = {dataset[i].id: torch.from_numpy(dataset[i].codes[:, 0]) for i in range(len(dataset))}


def closest_training_utterance(codes0: torch.Tensor) -> tuple[str, float]:
    """The training utterance whose q0 agrees with ``codes0`` [T] on the most frames (aligned at frame 0)."""
    shares = {uid: (q[:len(codes0)] == codes0[:len(q)]).float().mean().item() for uid, q in training_q0.items()}
    best = max(shares, key=shares.get)
    return best, shares[best]


fig, axes = plt.subplots(len(cases), 1, figsize=(11, 4.6), constrained_layout=True)
accuracy = {}
for ax, (split, u) in zip(axes, cases):
    text, langs, truth = utterance_tensors(u)
    alone = ar_decode(trained, text, langs, truth[:, :0, 0], top_k=1)
    continued = ar_decode(trained, text, langs, truth[:, :PROMPT, 0], top_k=1)
    if split == "held out":
        played, share = closest_training_utterance(alone.codes[0])
        accuracy[f"{u.id} played back"] = share
        print(f"{u.id} from its text alone: {alone.codes.shape[1]} frames, {share:.0%} of them equal to the "
              f"training utterance {played} ({len(training_q0[played])} frames)")
    length = truth.shape[1]
    rows = np.full((2, max(length, PROMPT + continued.codes.shape[1], alone.codes.shape[1])), np.nan)
    n = min(alone.codes.shape[1], length)
    rows[0, :n] = (alone.codes[0, :n] == truth[0, :n, 0]).numpy()
    m = min(continued.codes.shape[1], length - PROMPT)
    rows[1, :PROMPT] = 0.5  # the prompt itself: given, not predicted
    rows[1, PROMPT:PROMPT + m] = (continued.codes[0, :m] == truth[0, PROMPT:PROMPT + m, 0]).numpy()
    accuracy[(split, u.id)] = (rows[0, :n].mean(), np.nanmean(rows[1, PROMPT:PROMPT + m]) if m else 0.0)
    ax.imshow(rows, aspect="auto", cmap="RdYlGn", vmin=0, vmax=1, interpolation="nearest")
    ax.axvline(length - 0.5, color="black", lw=1.5)
    ax.set_yticks([0, 1], ["text alone", "1 s prompt +\ncontinuation"], fontsize=8)
    ax.set_title(f"{split}: {u.id} ({length} frames, black line). Text alone: {alone.codes.shape[1]} frames, "
                 f"q0 right on {accuracy[(split, u.id)][0]:.0%}; continued: {PROMPT + continued.codes.shape[1]} "
                 f"frames, q0 right on {accuracy[(split, u.id)][1]:.0%} after the prompt", fontsize=9)
axes[-1].set_xlabel("frame; green = the true q0, red = another code, yellow = the given prompt, "
                    "white = no true frame to compare with")
show(fig)
# What the next paragraph says: both work on the training utterance, almost nothing is right on the held-out
# ones, and from the text alone each held-out sentence plays back a training utterance.
assert min(accuracy[("training", dataset[0].id)]) > 0.9
held_out = [v for split, v in cases if split == "held out"]
assert all(max(accuracy[("held out", v.id)]) < 0.3 and accuracy[f"{v.id} played back"] > 0.9 for v in held_out)

# %% [markdown]
# On a training utterance both work: the model recognises the sentence (or the prompt's opening second) and
# plays back what it memorised. On the held-out sentences it produces codes, and even stops, but almost none
# of them are the true ones, and from the text alone it plays back one of its *training* utterances instead,
# frame for frame (the lines printed above): it has learnt which code sequences go with which of its training
# transcripts, not how phonemes sound. The rising held-out loss of 5.5 said so before we decoded anything.
#
# ## 5.8 Generalising: more data
#
# # The recipe above was built to memorise: a high learning rate, no dropout, 12 utterances. The test that matters
# for a model meant to speak is whether its **held-out** loss falls as it sees more data. We run the loop of 5.4
# on 3, 6 and all 12 training utterances (nested sets: each holds the smaller ones), from the same initial
# weights, for the same number of steps (a third of the recipe's, with the same peak learning rate, so the
# cosine comes down three times sooner), and measure the held-out loss every few steps
# with the library's `evaluate` (the model in eval mode, fixed NAR stages and prompts, so every point of every run
# is measured alike, and alike with `valid.csv` above).

# %%
SCALE_STEPS, SCALE_LR, SCALE_WARMUP, EVAL_EVERY = 150, recipe.lr, recipe.warmup_steps, 25  # a third of the steps
order = [dataset[i].id for i in random.Random(0).sample(range(len(dataset)), len(dataset))]
curves, start = {}, time.perf_counter()
for n in (3, 6, 12):
    subset = CodesDataset(root / "train", order[:n])
    _ = torch.manual_seed(0)
    learner = VallexModel(VallexConfig.tiny())
    points: list[tuple[int, float, float]] = []

    def held_out_loss(step: int, model: VallexModel, points: list = points) -> None:
        if step % EVAL_EVERY == 0:
            losses = evaluate(model, valid_set, recipe, torch.device("cpu"))  # per frame, in eval mode
            points.append((step, losses["ar_loss"], losses["nar_loss"]))

    train_rows = train_by_hand(learner, subset, SCALE_STEPS, lr=SCALE_LR, warmup=SCALE_WARMUP, on_step=held_out_loss)
    curves[n] = (np.array(points), np.mean([r["ar"] for r in train_rows[-10:]]))
    print(f"{n:2d} utterances ({sum(subset.frames)} frames): training AR loss {curves[n][1]:.2f} over the last 10 "
          f"steps; held-out AR loss {' '.join(f'{v:.2f}' for v in curves[n][0][:, 1])} at steps "
          f"{curves[n][0][:, 0].astype(int).tolist()}")
print(f"{len(curves)} runs of {SCALE_STEPS} steps in {time.perf_counter() - start:.0f} s")

fig, axes = plt.subplots(1, 2, figsize=(12, 3.2))
for (n, (points, _)), color in zip(curves.items(), ("tab:red", "tab:orange", "tab:green")):
    axes[0].plot(points[:, 0], points[:, 1], "o-", color=color, ms=4, label=f"{n} training utterances")
    axes[1].plot(points[:, 0], points[:, 2], "o-", color=color, ms=4, label=f"{n} training utterances")
axes[0].plot(valid["step"], valid["ar_loss"], "x:", color="gray", label="5.5's memorising recipe (12)")
for ax, title in zip(axes, ("AR (q0), held out", "NAR (random stage), held out")):
    ax.axhline(np.log(1025), color="black", lw=0.8, ls="--")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per frame)")
    ax.set_title(f"{title}; dashed: ln 1025, a uniform guess", fontsize=10)
    ax.legend(fontsize=8)
show(fig)

final = {n: points[-1, 1] for n, (points, _) in curves.items()}
assert final[3] > final[6] > final[12] and final[12] < valid["ar_loss"][-1]  # what the next paragraph says
display(Markdown(
    f"The held-out AR loss after {SCALE_STEPS} steps falls as the data grows: {final[3]:.2f} nats per frame with 3 "
    f"utterances, {final[6]:.2f} with 6, {final[12]:.2f} with 12, while the *training* loss rises "
    f"({curves[3][1]:.2f}, {curves[6][1]:.2f}, {curves[12][1]:.2f}): with fewer utterances to remember the model "
    "memorises them, with more it has to learn what they share. The 12-utterance run ends "
    f"{'below' if final[12] < valid['ar_loss'].min() else 'above'} the best held-out loss of 5.5's longer run "
    f"({valid['ar_loss'].min():.2f}) and far below where that run ended ({valid['ar_loss'][-1]:.2f}): stopping "
    "before memorisation sets in is itself a regulariser. This is generalisation at toy scale, over code statistics "
    f"(silences, which codes follow which), not reading: {len(dataset)} transcripts cannot teach how phonemes "
    "sound. The NAR's held-out loss (one fixed stage per held-out batch, as for every point) jumps from point to "
    "point and does not order by the amount of data at this scale."))

# %% [markdown]
# ### ✎ Exercise 3: a baseline for the held-out loss
#
# Is a held-out AR loss of a few nats per frame good? Compare it with a model that ignores the text and every
# earlier frame: the **unigram** model, which predicts each q0 code with its frequency in the training frames.
# Add one to the count of each of the 1024 codes (so that a code never seen in training does not get probability
# 0): $p(c) = (n_c + 1) / (N + 1024)$ with $N$ training frames; the baseline is the mean of $-\ln p(c)$ over the
# held-out frames.

# %%
def unigram_loss(train_q0, held_q0) -> float:
    """Mean -ln p(code) over the held-out q0 frames; train_q0, held_q0: lists of int arrays [T]."""
    return math.log(1024)  # ✎ replace: this is the uniform guess, whatever the training codes say


# %%
_ = report("unigram baseline", check_unigram_loss, unigram_loss)
yours = unigram_loss([dataset[i].codes[:, 0] for i in range(len(dataset))],
                     [valid_set[i].codes[:, 0] for i in range(len(valid_set))])
print(f"your baseline on the held-out utterances: {yours:.2f} nats per frame; held-out AR losses after "
      f"{SCALE_STEPS} steps: " + ", ".join(f"{final[n]:.2f} ({n} utterances)" for n in final))

# %% [markdown]
# **Expected:** `✓` once your function gives the add-one unigram cross-entropy on the check's own codes. Then
# compare your number on the held-out utterances with the held-out losses printed beside it: which runs beat a
# model that knows only how often each code occurs, and so have learnt something about speech codes in general?
# (The AR's loss also scores one EOS per utterance: a small difference over a few hundred frames.)
#
# At real scale the same recipe must generalise much further, to *reading*: tens of thousands of hours of speech
# (the paper trains on LibriLight English and WenetSpeech Mandarin) and days of GPU time. Notebook 6 decodes the
# tiny model of 5.5 at two points of its training to show why autoregressive TTS repeats itself, skips or never
# stops, and how decoding catches it.
#
# Next steps: `vallex prepare-data --folder DIR --out DATA` and `vallex train --data DATA --out RUN` run the
# same code from the command line; `init_checkpoint` fine-tunes the public model, and
# `vallex.text.EspeakFrontend` with `init_language_from` adds a language (notebook 1, section 1.6).
