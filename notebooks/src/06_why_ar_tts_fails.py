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
# sentences yet, standing in for a real model facing text it handles badly) and **step 450** (the end: its 12
# sentences memorised). Then the decoding tools, each on the same three sentences: greedy, sampling, top-k, the
# frames-per-token cap, repetition-aware sampling and verified best-of-N.
#
# > **What this model can and cannot show.** It is 1.2 M parameters trained for 30 s on 36 s of speech, and
# > its audio cannot be listened to here (no trained vocoder weights). What it shows are the *mechanisms*: the
# > probability of stopping at each step, loops in the codes, lengths. How often a real checkpoint fails is
# > not measured here (`bench/robustness.py` counts failures per sampling setting on another tiny model, with
# > the same caveat).

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
from tutorial import draw_codes, show

from vallex.audio import load_audio
from vallex.inference.ar import ar_decode
from vallex.inference.length_guards import SPEAKING_RATE, frame_bounds_of_tokens
from vallex.inference.ras import RAS_THRESHOLD, RAS_TOP_P, RAS_WINDOW, min_repeats, ras_fires
from vallex.inference.sampling import draw_tokens, draw_tokens_ras
from vallex.languages import LANGUAGES
from vallex.synthesis.verification import Verifier
from vallex.text import ids_to_phonemes
from vallex.training.dataset import CodesDataset
from vallex.training.forward import TrainingBatch, training_forward
from vallex.weights.checkpoint import load_model

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # jieba's import, harmless
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto, imported by the recogniser

result = tutorial.train_tiny_model()  # notebook 5's run: trained now, or found where 5 left it
models = {"step 150": load_model(result.out_dir / "checkpoint-00000150.pt").eval(),
          "step 450": load_model(result.last_checkpoint).eval()}
root = tutorial.tutorial_dir()
utterances = {}
for folder in ("train", "valid"):
    data = CodesDataset(root / folder)
    utterances.update({data[i].id: data[i] for i in range(len(data))})
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
# The AR stops when end-of-speech (EOS, id 1024) is chosen among 1025 ids. Feed a model the *true* frames of
# a sentence (teacher forcing, as in training) and read its probability of EOS at every step:
#
# * **greedy** decoding stops only where EOS is the *most likely* id;
# * **sampling** stops at the first step whose draw lands on EOS, so what matters is the chance that it has
#   *not* stopped yet: the product of (1 − P(EOS)) over the steps so far. A P(EOS) of 2 % at every step
#   leaves a 1 in 100 chance of still speaking after 225 frames.

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


fig, axes = plt.subplots(1, 2, figsize=(12, 3.2))
for (label, model), color in zip(models.items(), ("tab:red", "tab:blue")):
    logits = next_frame_logits(model, "acou_1")
    p_eos = logits.softmax(-1)[:, 1024].numpy()  # [T+1]: P(EOS) after each number of frames
    survival = np.cumprod(1 - p_eos)
    greedy_stops = np.flatnonzero(logits.argmax(-1).numpy() == 1024)
    axes[0].semilogy(p_eos, color=color, lw=0.8, label=f"{label}")
    axes[0].plot(greedy_stops, p_eos[greedy_stops], "o", color=color, ms=4)
    axes[1].plot(survival, color=color, label=label)
    print(f"{label}: P(EOS) median {np.median(p_eos[:-1]):.4f} before the last frame, {p_eos[-1]:.2f} after it; "
          f"EOS is the most likely id after {greedy_stops.tolist()[:6]} frames; chance a sampled run is still "
          f"going after 100 frames {survival[100]:.1%}, at the true end {survival[-2]:.1%}")
for ax in axes:
    ax.axvline(len(utterances["acou_1"].codes), color="black", ls="--", lw=1)
    ax.set_xlabel("frames so far (true ones); dashed: the true end")
axes[0].set_ylabel("P(EOS) at the next step")
axes[0].set_title("probability of stopping now (dots: EOS is the most likely id)", fontsize=10)
axes[0].legend(fontsize=8)
axes[1].set_ylabel("P(a sampled run has not stopped yet)")
axes[1].set_title("sampling: chance of still speaking, Π (1 − P(EOS))", fontsize=10)
show(fig)

# %% [markdown]
# The half-trained model gives EOS a small chance at *every* step (most of all in the first frames, which
# sound alike in every utterance), so a sampled run has a fair chance of stopping long before the true end: a
# **skip**. Near the true end its P(EOS) rises, since most of its training utterances last 3 s, but EOS is
# never the *most* likely id, so greedy decoding would never stop. The finished model gives EOS almost nothing
# until the true end and then nearly everything: sampling and greedy stop on the right frame. All of this is
# on the *true* frames; decoding freely, the model reads its own frames, and once they leave what it knows
# its P(EOS) does too (section 6.3).
#
# ## 6.2 What the AR looks at: the text, frame by frame
#
# The only thing tying the speech to the text is attention: each audio frame's query scores the text's keys
# (notebook 3, section 3.6). Nothing in VALL-E forces it to move through the text in order (there is no
# duration model and no alignment), so whether it does is whatever training made of it. We record the
# attention weights by replacing each layer's attention kernel with the same computation written out, check
# that the logits do not change, and look at where the finished model's audio frames attend among the text.

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
assert torch.allclose(logits, next_frame_logits(models["step 450"], "acou_1"), atol=1e-4)
S = len(utterances["acou_1"].text)
phonemes = list(ids_to_phonemes(utterances["acou_1"].text.tolist()).replace(" ", "_"))
fig, axes = plt.subplots(1, len(weights) + 1, figsize=(14, 3.6), gridspec_kw={"width_ratios": [3] * len(weights) + [1.4]})
for i, w in enumerate(weights):
    to_text = w[:, S:, :S].mean(0).numpy()  # [T+1, S]: audio queries over text keys, mean of the heads
    image = axes[i].imshow(to_text.T, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest")
    axes[i].set_yticks(range(0, S, 4), phonemes[::4], fontsize=8)
    axes[i].set_xlabel("audio frame (query)")
    axes[i].set_title(f"layer {i}: attention from each frame to the text", fontsize=9)
    fig.colorbar(image, ax=axes[i], pad=0.01)
    axes[-1].plot(w[:, S:, :S].sum(-1).mean(0).numpy(), label=f"layer {i}", lw=0.8)
axes[0].set_ylabel("text (phoneme)")
axes[-1].set_ylim(0, 1)
axes[-1].set_xlabel("audio frame")
axes[-1].set_title("share of attention on the text", fontsize=9)
axes[-1].legend(fontsize=8)
show(fig)
print("logits with the recorded attention equal the model's: True")

# %% [markdown]
# No diagonal: the frames do not walk through the phonemes in order. The first frames look at the text a
# lot (a few fixed places in it, the horizontal bands), later frames hardly at all: the share of attention on
# the text falls from over half to a tenth or so, and the rest goes to the audio so far. That is how a model
# that *memorised* 12 sequences works: the text tells it *which* sequence, the previous frames *where* in it.
# It is also why the held-out sentence of notebook 5 came out as a training sentence, and why a model that
# leans on its own previous frames can lock into a loop: nothing in the text pulls it forward.
#
# ## 6.3 Decoding strategies, on the same sentences
#
# Now the whole sentence, decoded freely from the text alone (each frame conditioned on the model's own
# previous frames), by the strategies of notebook 4, three random seeds each:
#
# | strategy | what it draws from |
# |---|---|
# | greedy | always the most likely id (`top_k=1`) |
# | sampling | the full distribution (the reference's default) |
# | top-k 10 | the 10 most likely ids |
# | temperature 0.7 | the full distribution, sharpened |
# | nucleus 0.8 | the most likely ids that together hold 80 % of the probability (`top_p=0.8`) |
#
# Every run has the reference's length limit, 16 frames per text token. Loops are measured with the rule of
# section 6.5 (`vallex.inference.ras.ras_fires`): the share of frames whose code already occurred 15 times or
# more in the previous second. On the 14 real utterances of `notebooks/data/presets` it flags:

# %%
real_flagged = [ras_fires(tutorial.presets().load(name).codes[:, :, 0]).float().mean().item()
                for name in tutorial.TRAIN_PRESETS + tutorial.HELD_OUT_PRESETS]
print(f"real speech: {min(real_flagged):.0%} to {max(real_flagged):.0%} of frames (median {np.median(real_flagged):.0%})")

STRATEGIES = {"greedy": dict(top_k=1), "sampling": dict(), "top-k 10": dict(top_k=10),
              "temperature 0.7": dict(temperature=0.7), "nucleus 0.8": dict(top_p=0.8)}
SEEDS = range(3)


def decode(model, name: str, seed: int, guards: bool = False, **settings):
    """One free-running AR decode of a sentence from its text alone; ``guards``: with its length guards (6.4)."""
    text, langs, _ = inputs(name)
    if guards:
        bounds = frame_bounds_of_tokens([LANGUAGES[row] for row in utterances[name].langs])
        settings.update(min_frames=bounds.min_frames, max_frames=bounds.max_frames)
    return ar_decode(model, text, langs, torch.zeros(1, 0, dtype=torch.long),
                     generator=torch.Generator().manual_seed(seed), **settings)


def outcome(run, name: str) -> dict:
    """What went wrong with one decode, measured against the sentence's true length and frames."""
    codes, truth = run.codes[0], inputs(name)[2]
    n = min(len(codes), len(truth))
    return {"frames": len(codes), "ratio": len(codes) / len(truth),
            "skipped": run.stop_reason == "eos" and len(codes) < len(truth) / 2,
            "never stopped": run.stop_reason != "eos", "flagged": ras_fires(codes[None]).float().mean().item(),
            "right": (codes[:n] == truth[:n]).float().mean().item() * n / len(truth), "codes": codes}


def table(strategies: dict, model_names=tuple(models)) -> dict:
    """Run every strategy on every sentence and seed; print one line per model and strategy."""
    runs = {}
    print(f"{'model':9s} {'strategy':24s} {'skips':>5s} {'never stops':>11s} {'length / true':>13s} "
          f"{'frames flagged':>14s} {'q0 right':>8s}")
    for model_name in model_names:
        for strategy, settings in strategies.items():
            rows = [outcome(decode(models[model_name], name, seed, **settings), name)
                    for name in SENTENCES for seed in SEEDS]
            runs[model_name, strategy] = rows
            print(f"{model_name:9s} {strategy:24s} {sum(r['skipped'] for r in rows):2d}/{len(rows)} "
                  f"{sum(r['never stopped'] for r in rows):8d}/{len(rows)} "
                  f"{np.median([r['ratio'] for r in rows]):13.2f} {np.mean([r['flagged'] for r in rows]):14.0%} "
                  f"{np.mean([r['right'] for r in rows]):8.0%}")
    return runs


runs = table(STRATEGIES)

# %% [markdown]
# (skips: stopped by EOS before half the true length; length / true: median over the 9 runs; frames flagged:
# mean share of frames in loops; q0 right: share of the true frames reproduced in place.)
#
# One sentence, the half-trained model, every run of the table drawn as codes (one colour per id): a loop is
# a long band of one colour; the dashed line is the true end, the red one the length limit.

# %%
def gallery(model_name: str, name: str, strategies: dict, title: str) -> None:
    """q0 of every decode of ``name`` by each strategy and seed (greedy ones once: they ignore the seed)."""
    runs_shown = []
    for strategy, settings in strategies.items():
        greedy = settings.get("top_k") == 1  # greedy ignores the seed: once is enough
        runs_shown += [(strategy if greedy else f"{strategy}, seed {seed}", settings, seed)
                       for seed in (SEEDS[:1] if greedy else SEEDS)]
    rows = [outcome(decode(models[model_name], name, seed, **settings), name) for _, settings, seed in runs_shown]
    limit = 16 * len(utterances[name].text)
    grid = np.full((len(rows), max(max(r["frames"] for r in rows), len(utterances[name].codes)) + 1), -1)
    for i, r in enumerate(rows):
        grid[i, :r["frames"]] = r["codes"].numpy()
        if not r["never stopped"]:
            grid[i, r["frames"]] = 1024  # EOS, in black
    fig, ax = plt.subplots(figsize=(12, 0.3 * len(rows) + 1.2))
    draw_codes(ax, grid)
    ax.set_yticks(range(len(rows)), [f"{label}: {r['frames']} frames" + (" (limit)" if r["never stopped"] else "")
                                     for (label, _, _), r in zip(runs_shown, rows)], fontsize=8)
    ax.axvline(len(utterances[name].codes), color="black", ls="--", lw=1.5)
    if limit < grid.shape[1]:
        ax.axvline(limit, color="tab:red", lw=1.5)
    ax.set_title(title, fontsize=10)
    show(fig)


gallery("step 150", "babara", STRATEGIES, "babara, half-trained model: q0 of each decode (black cell: EOS)")

# %% [markdown]
# The table and the picture show the three failures, and that each setting trades one for another:
#
# * **greedy** on the half-trained model never draws EOS (it is never the most likely id) and locks into a
#   loop: most of its frames are flagged, and it runs to the 16-frames-per-token limit, several times the
#   true length. Greedy never stops.
# * **sampling** escapes loops, but it draws EOS at the first lucky step: about half its runs stop before
#   half the sentence, some after a handful of frames.
# * top-k, temperature and nucleus sit in between: they stop early less often than sampling and loop far
#   less than greedy, but their runs hold more repeated codes than most real speech, and top-k and nucleus
#   still stop early now and then.
# * The **finished** model, on the sentences it memorised, mostly follows its path with any setting, but
#   sampling still wanders off it (its q0-right share drops), and on the held-out sentence no setting helps.
#
# ## 6.4 The length limit, and length guards
#
# The reference caps a sentence at **16 frames per text token**: 213 ms per phoneme, several times any real
# speaking rate, so a loop runs for many seconds before the cap ends it, and nothing tells the caller that it
# did. `vallex.inference.length_guards` bounds each sentence by the speaking rates measured on real speech
# (codebook-1 frames per text token: the median over the reference's presets per language) instead:
#
# * EOS is **masked** until half the median-rate length (the fastest preset speaks at 0.6× its median), which
#   removes early stops;
# * the sentence **stops** at twice the median-rate length plus one second (the slowest preset: 1.5×), and
#   is marked `StopReason.MAX_LENGTH`, which the API turns into a warning.

# %%
print("median frames per text token:", SPEAKING_RATE)
for name in SENTENCES:
    langs = [LANGUAGES[row] for row in utterances[name].langs]
    bounds = frame_bounds_of_tokens(langs)
    print(f"{name:7s} {len(langs):3d} tokens: true length {len(utterances[name].codes):4d} frames; guards "
          f"{bounds.min_frames}..{bounds.max_frames}; the reference's cap {16 * len(langs)}")

# %% [markdown]
# In the API this is `synthesize_detailed(..., length_guards=True)`; here `decode(..., guards=True)` passes the
# same bounds to `ar_decode` (`min_frames`, `max_frames`), on the same sentences and seeds:

# %%
GUARDED = {"greedy + guards": dict(top_k=1, guards=True), "sampling + guards": dict(guards=True)}
runs.update(table(GUARDED, ["step 150"]))  # the finished model's lengths were right already

# %% [markdown]
# The guards turn every early stop into a sentence of at least half the expected length, and end a loop at
# the limit, marked as such. For English, at 6.96 frames per token, that limit is close to the reference's
# cap; for Mandarin (4.06) it is 40 % lower. They fix *lengths*, not *content*: the frames between the bounds
# are whatever the model drew (the flagged share of greedy's frames does not move). Loops need a change to how
# frames are drawn.
#
# ## 6.5 Repetition-aware sampling
#
# VALL-E 2 (Algorithm 1) proposed **repetition-aware sampling** (RAS): draw a candidate from the nucleus (the most
# likely ids holding `top_p` of the probability, 0.8 here), and if that candidate already occurred often in
# the recent frames (at least 15 times in the last 75, i.e. t_r = 0.2 over K = 75 frames, calibrated on the
# presets' real codes: `bench/ras_calibration.py`), throw it away and draw from the *full* distribution
# instead, which gives the tail a chance to pull the sentence out of the loop. When the rule does not fire,
# RAS is plain nucleus sampling.
#
# By hand, on the step where the half-trained model's greedy loop on `babara` has run for 150 frames, for
# eight random seeds, each checked against the library's sampler (`vallex.inference.sampling.draw_tokens_ras`)
# given the same random numbers:

# %%
looping = decode(models["step 150"], "babara", 0, top_k=1).codes[0]  # greedy: a loop
history = looping[None, :150]  # [1, 150]: the frames so far
logits = next_frame_logits(models["step 150"], "babara", looping[:150])[-1:]  # [1, 1025]: the next frame's
threshold = min_repeats(RAS_WINDOW, RAS_THRESHOLD)  # 15
loop_code = int(looping[149])
print(f"the loop's code {loop_code}: P = {logits.softmax(-1)[0, loop_code]:.2f} at the next step")
for seed in range(8):
    generator = torch.Generator().manual_seed(seed)
    candidate, _, _ = draw_tokens(logits, top_p=RAS_TOP_P, generator=generator)  # 1. from the nucleus
    fallback, _, _ = draw_tokens(logits, generator=generator)  # the full distribution's draw
    count = int((history[0, -RAS_WINDOW:] == candidate[0]).sum())  # 2. times it occurred in the last second
    by_hand = fallback if count >= threshold else candidate  # 3. too often: take the full draw instead
    library, _, _, fired = draw_tokens_ras(logits, history, generator=torch.Generator().manual_seed(seed))
    assert int(by_hand) == int(library) and bool(fired) == (count >= threshold)
    print(f"seed {seed}: nucleus candidate {int(candidate):4d}, {count:2d} times in the last {RAS_WINDOW} frames "
          f"-> {'full draw' if count >= threshold else 'kept'} {int(by_hand):4d}   (draw_tokens_ras: {int(library)})")

# %% [markdown]
# The rule fires on every draw of the loop's code, and the full distribution still returns that code most
# of the time (it is still the most likely id), so a loop does not end at once: it ends at the first step the
# full draw lands elsewhere, within a few steps. (The library draws both candidates for every row at every
# step, so its random numbers never depend on the data.) Now RAS on the same sentences and seeds, with and without the length guards (the API's `ras=True`;
# `ar_decode` reports how many draws it replaced):

# %%
RAS = {"RAS": dict(ras=True), "RAS + guards": dict(ras=True, guards=True)}
runs.update(table(RAS, ["step 150"]))
fired = [decode(models["step 150"], name, seed, ras=True).ras_fired for name in SENTENCES for seed in SEEDS]
print(f"\nhalf-trained model, RAS: the rule replaced {sum(fired)} draws over {len(fired)} runs "
      f"({np.mean(fired):.1f} per run)")
gallery("step 150", "babara", {"greedy": dict(top_k=1), "nucleus 0.8": dict(top_p=0.8), "RAS": dict(ras=True),
                               "greedy + guards": dict(top_k=1, guards=True), "RAS + guards": dict(ras=True, guards=True)},
        title="babara, half-trained model: greedy, nucleus, RAS, and both with length guards")

# %% [markdown]
# Compare RAS with plain nucleus 0.8, its draw when the rule does not fire: the loops go (the flagged share
# drops to real speech's), at the cost of a handful of replaced draws per sentence. What RAS does not fix is
# the half-trained model's early EOS, which is the guards' job; together they give sentences of plausible
# length without loops. Neither makes the words right: the half-trained model does not know its sentences,
# and no sampler can add what the model has not learnt.
#
# ## 6.6 Best of N, and verifying it
#
# Another way out is to make several candidates and keep the best, if we can tell which is best. The
# library's `best_of=N` samples N rows in parallel and keeps the one with the highest **mean log-probability**
# of its frames. But a loop is *likely* (each repeat makes the next more so), and so is a run that stops after
# a few confident frames; likelihood ranks them high. On the half-trained model, 8 rows each:

# %%
for name in SENTENCES:
    for label, settings in (("sampling", dict()), ("temperature 0.7", dict(temperature=0.7))):
        best = outcome(decode(models["step 150"], name, 0, best_of=8, **settings), name)
        print(f"{name:7s} {label:16s} best of 8 by likelihood: {best['frames']:4d} frames "
              f"(true {len(utterances[name].codes)}), {best['flagged']:.0%} of them flagged as loops")

# %% [markdown]
# So the ranking has to look at the *audio*: does it say the text? **Verified best-of-N** decodes each
# candidate to a waveform, transcribes it with a speech recogniser (Whisper), and ranks candidates by their
# **phoneme error rate** against the target text, computed on our own G2P's phonemes so that English, Mandarin
# and Japanese are scored alike; among candidates within 5 points of the best PER, the one whose voice is
# closest to the prompt's (Resemblyzer speaker embeddings) wins. `vallex.synthesis.verification.Verifier`
# does the scoring (`vallex verify` on the command line); the API's `verify="asr"` option, which samples N
# rows, decodes them with the NAR and Vocos and keeps the verified best, is built on it.
#
# Our tiny model's audio is not speech (no trained vocoder weights here), so a recogniser would hear nothing
# in any candidate. We show the Verifier where it can work: on three espeak-ng recordings of one sentence,
# one right, one with a repeated phrase (a loop), one cut short (a skip), with a fourth recording in the same
# voice as the prompt. Recogniser: the bundled Whisper tiny.en (English only, offline).

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
labels = list(candidates)
print(f"\n{'rank':4s} {'candidate':9s} {'seconds':>7s} {'PER':>5s} {'voice':>5s}  heard")
for score in verification.scores:
    print(f"{score.rank:4d} {labels[score.index]:9s} {len(wavs[labels[score.index]]) / 24000:7.2f} "
          f"{score.phoneme_error_rate:5.2f} {score.similarity:5.2f}  {score.transcript}")
assert labels[verification.best.index] == "right"

# %% [markdown]
# The recogniser hears the repeated "in the morning" and the missing second half, and the phoneme error rate
# ranks the right candidate first; the voice similarity only orders candidates whose PERs are within 5 points
# of the best. This is what catches the failures the samplers cannot: wrong or missing words. Its costs
# are N decodes and N recognitions per sentence, and a recogniser for the language (Whisper tiny.en hears
# English only; `VALLEX_ASR_MODEL` names a multilingual one).
#
# ## 6.7 Summary
#
# | failure | where it comes from | what catches it | in the library |
# |---|---|---|---|
# | never stops | EOS is never the most likely id (greedy), or never drawn | a length limit: 16 frames per token (reference), or twice the measured speaking rate | `length_guards=True`, `StopReason.MAX_LENGTH` |
# | skips (stops early) | a small P(EOS) at every step adds up under sampling | masking EOS before half the expected length | `length_guards=True` |
# | repeats (loops) | the most likely next code is the last one again; greedy, low temperature and small top-k follow it | repetition-aware sampling | `ras=True`, `draw_tokens_ras` |
# | wrong or missing words | the model does not read the text (6.2) | verified best-of-N: transcribe candidates, keep the best PER | `Verifier`, `vallex verify`, `verify="asr"` |
#
# Each tool treats a symptom of one mechanism, and none makes a model know a sentence it has not learnt:
# the held-out sentence stayed wrong under every setting. What they buy is that a model that *has* learnt
# the language fails less often in the ways its sampling, rather than its knowledge, causes.
