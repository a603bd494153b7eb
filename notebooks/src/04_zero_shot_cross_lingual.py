# %% [markdown]
# # 4. Zero-shot cross-lingual speech: the whole pipeline
#
# VALL-E X (Zhang et al. 2023, [arXiv 2303.03926](https://arxiv.org/abs/2303.03926)) clones a voice it has
# never heard, from one short utterance, into another language (the paper's "zero-shot cross-lingual TTS"). No
# fine-tuning and no speaker embedding: the prompt is simply put *in front of* the sequence, and the model
# continues it. Concretely (§3 and Figure 1 of the paper):
#
# 1. **prompt**: a few seconds of the speaker (source language) → EnCodec codes `[1, P, 8]`, and the
#    phonemes of its transcript;
# 2. **text**: the phonemes of what to say (target language), with per-token language ids;
# 3. **AR** decoder: continues codebook 0 after the prompt's codebook 0, one frame at a time, until it emits
#    end-of-speech: this decides *what* is said, *when*, and in which voice;
# 4. **NAR** decoder: fills codebooks 1..7 of the new frames in 7 greedy passes, reading the prompt's
#    8 codebooks for acoustic detail;
# 5. **Vocos** turns the 8 codebooks back into a 24 kHz waveform.
#
# This notebook does each step by hand with `vallex.inference` (`ar`, `nar`, `sampling`) and the model, checks it against the library,
# then uses the one-call API `vallex.VallEX` for cross-lingual synthesis, accent control and long text.
#
# > **Runs offline with random tiny weights.** Without `VALLEX_WEIGHTS_DIR`, the cell below writes a folder
# > of random weights (`vallex.weights.random_weights.make_random_weights(dir, size="tiny")`: a 2-layer VALL-E X and
# > untrained EnCodec/Vocos with their real architectures) and loads it exactly as it would load the real
# > checkpoint. Every step runs for real, but **the audio is noise**, and the AR decoder, which has never
# > learnt when to stop, ends only when it happens to draw end-of-speech (about 1 chance in 1025 per step)
# > or reaches its length limit, so outputs are ~10-20 s long. Set `VALLEX_WEIGHTS_DIR` to a folder
# > with the real weights (`vallex download --weights-dir DIR`) to hear actual speech.

# %%
import os
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import Audio, display
from tutorial import draw_codes, draw_token_grid, show, token_grid_legend, token_states

from vallex.api import VallEX
from vallex.audio import FRAME_RATE, SAMPLE_RATE
from vallex.inference.ar import ar_decode
from vallex.inference.fastpath import KVCache
from vallex.inference.generation import language_ids
from vallex.inference.nar import NARInput, nar_decode
from vallex.inference.sampling import filter_logits, sample_tokens
from vallex.model import ar_attention_mask
from vallex.synthesis.results import SENTENCE_PAUSE_SECONDS
from vallex.text import tokenize
from vallex.training.forward import TrainingBatch, training_forward
from vallex.weights import RandomWeightsWarning, resolve_weights
from vallex.weights.random_weights import make_random_weights

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto, imported by vocos
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # jieba's import, harmless
warnings.filterwarnings("ignore", category=RandomWeightsWarning)  # said once below, in words


workdir = Path(tempfile.mkdtemp(prefix="vallex-nb04-"))
WEIGHTS_DIR = os.environ.get("VALLEX_WEIGHTS_DIR")
if not WEIGHTS_DIR:
    make_random_weights(workdir / "weights", size="tiny", seed=0)
weights_dir = WEIGHTS_DIR or workdir / "weights"
tts = VallEX.from_pretrained(weights_dir=weights_dir, device="cpu")  # the cells below build tensors on the CPU
model = tts.model
RANDOM_WEIGHTS = resolve_weights(weights_dir, download=False).random
print("weights:", "RANDOM, tiny (offline demo: the audio is noise)" if RANDOM_WEIGHTS else weights_dir)
print(model.config)

# %% [markdown]
# ## 4.1 The voice prompt
#
# We record an English speaker (espeak-ng here) and make a `VoicePrompt`: its EnCodec codes and the
# phoneme ids of its transcript. The reference saves exactly this as an `.npz` "preset".

# %%
transcript = "I love reading books in the quiet library."
prompt_wav = workdir / "prompt.wav"
subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(prompt_wav), transcript], check=True)
prompt = tts.make_prompt(prompt_wav, transcript=transcript, language="en")
print(f"prompt: {prompt.seconds:.2f} s -> codes {tuple(prompt.codes.shape)}, "
      f"{len(prompt.text_ids)} transcript tokens, language {prompt.language!r}")
display(Audio(str(prompt_wav)))

# %% [markdown]
# ## 4.2 Assembling the input
#
# The text sequence is `[prompt transcript ; target text]`; `enroll_len` marks where the target starts.
# The prompt's tokens get the prompt's language id, the target's tokens their own (Mandarin here), which is
# all it takes to make the task cross-lingual (§3: the language ID).

# %%
target = tokenize("欢迎来到北京，今天天气很好。", "zh")  # "Welcome to Beijing, the weather is nice today."
text = torch.tensor([prompt.text_ids + target.ids])  # [1, S]
enroll_len = len(prompt.text_ids)
langs = language_ids(text.shape[1], enroll_len, prompt.language, target.langs)[None]  # [1, S]
prompt_codes = prompt.codes  # [1, P, 8]
print(f"text [1, {text.shape[1]}] = {enroll_len} prompt tokens + {len(target)} target tokens")
print("language ids:", langs[0].tolist())
print("target phonemes:", target.phonemes)
print(f"AR input audio: BOS + {prompt_codes.shape[1]} prompt frames (codebook 0); "
      f"at most 16 x {text.shape[1]} = {16 * text.shape[1]} new frames")

# %% [markdown]
# ## 4.3 The AR decoder, one step at a time
#
# This is row q0 of notebook 3's grid, filled left to right after the prompt's q0:

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 2.3))
for ax, step in zip(axes, (0, 1, 5)):
    draw_token_grid(ax, token_states(4, 10, ar_step=step), 4, f"AR step {step + 1}")
token_grid_legend(fig)
show(fig)

# %% [markdown]
# The first step (**prefill**) runs the whole prefix `[text ; BOS ; prompt codebook 0]` with the AR mask
# and stores every layer's keys and values in a **KV cache**. Each later step embeds only the newest frame,
# attends to the cache (a new frame may see everything before it, so no mask is needed) and appends its own
# keys and values. The logits cover 1024 codes + end-of-speech (1024).
#
# Sampling: the reference samples from the full softmax (temperature 1, no top-k), so the same prompt
# gives a different rendition each time; `temperature` and `top_k` trade diversity for stability. EOS is
# blocked at the first step so the output is never empty.

# %%
def ar_by_hand(max_frames: int, seed: int, temperature: float = 1.0, top_k: int | None = None):
    """A readable AR loop with a KV cache; returns (codes [T], logits of each step)."""
    cfg = model.config
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        text_emb = model.embed_text("ar", text, langs)  # [1, S, D]
        audio_in = torch.cat([torch.tensor([[cfg.bos_id]]), prompt_codes[..., 0]], dim=1)  # [1, 1 + P]
        prefix = torch.cat([text_emb, model.embed_ar_audio(audio_in)], dim=1)  # [1, S + 1 + P, D]
        cache = KVCache.allocate(cfg, 1, prefix.shape[1] + max_frames, "cpu", prefix.dtype)
        hidden = model.ar_decoder(prefix, ar_attention_mask(text.shape[1], audio_in.shape[1]), cache=cache, start=0)
        position = prefix.shape[1]
        frames, step_logits = [], []
        for step in range(max_frames):
            logits = model.ar_logits(hidden[:, -1])  # [1, 1025]
            step_logits.append(logits[0])
            if step == 0:
                logits = logits.clone()
                logits[:, cfg.eos_id] = float("-inf")  # never stop before the first frame
            token, _ = sample_tokens(logits, temperature=temperature, top_k=top_k, generator=generator)
            if int(token) == cfg.eos_id:
                break
            frames.append(int(token))
            new = model.embed_ar_audio(token[:, None], offset=prompt_codes.shape[1] + len(frames))  # [1, 1, D]
            hidden = model.ar_decoder(new, None, cache=cache, start=position)  # only the new position
            position += 1
    return torch.tensor(frames), torch.stack(step_logits)


codes0, step_logits = ar_by_hand(max_frames=60, seed=123)
library = ar_decode(model, text, langs, prompt_codes[..., 0], max_frames=60, generator=torch.Generator().manual_seed(123))
print(f"by hand: {len(codes0)} frames; vallex.inference.ar.ar_decode: {library.codes.shape[1]} frames ({library.stop_reason})")
print("identical to the library:", torch.equal(codes0, library.codes[0]))
print("first frames:", codes0[:12].tolist())

# %% [markdown]
# The library runs exactly these steps. Its one-frame decoder calls go through `vallex.inference.fastpath.OneFrameStep`,
# which looks up every layer's weights and functions once per generation instead of walking the modules at
# each of the ~300 steps: the same numbers, about 1 ms less Python per step on a 2-core CPU.
#
# The cache is an optimisation, not an approximation: recomputing the whole sequence with the AR mask at
# the last step gives the same logits. It turns the cost of step *t* from *S + P + t* positions into one.

# %%
with torch.inference_mode():
    audio_full = torch.cat([torch.tensor([[model.config.bos_id]]), prompt_codes[..., 0], codes0[None, :-1]], dim=1)
    full = torch.cat([model.embed_text("ar", text, langs), model.embed_ar_audio(audio_full)], dim=1)
    hidden_full = model.ar_decoder(full, ar_attention_mask(text.shape[1], audio_full.shape[1]))
    logits_full = model.ar_logits(hidden_full[:, -1])[0]
print("last step, cached vs full recomputation: max |diff| =",
      f"{(logits_full - step_logits[len(codes0) - 1]).abs().max().item():.2e}")

# %% [markdown]
# How much the cache saves grows with the length. We time 600 steps (8 s of speech) both ways: without the
# cache, step *t* runs the decoder over all *S + P + t* positions again, so its time grows with *t*; with the
# cache it stays flat. (A recomputing step depends on nothing but its length, so we time every 25th one, three
# times, and keep the fastest; timings depend on the machine and its load.)

# %%
STEPS = 600


def recomputed_ms(step: int) -> float:
    """Milliseconds of AR step ``step`` without a cache: the decoder over the whole sequence so far."""
    audio = torch.cat([torch.tensor([[model.config.bos_id]]), prompt_codes[..., 0],
                       codes0.repeat(STEPS // len(codes0) + 1)[None, :step]], dim=1)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(3):
            start = time.perf_counter()
            x = torch.cat([model.embed_text("ar", text, langs), model.embed_ar_audio(audio)], 1)
            model.ar_decoder(x, ar_attention_mask(text.shape[1], audio.shape[1]))
            best = min(best, time.perf_counter() - start)
    return best * 1e3


def cached_ms() -> np.ndarray:
    """Milliseconds of each of STEPS AR steps with the KV cache (each appends one position)."""
    times = []
    with torch.inference_mode():
        audio = torch.cat([torch.tensor([[model.config.bos_id]]), prompt_codes[..., 0]], dim=1)
        cache = KVCache.allocate(model.config, 1, text.shape[1] + audio.shape[1] + STEPS, "cpu", torch.float32)
        model.ar_decoder(torch.cat([model.embed_text("ar", text, langs), model.embed_ar_audio(audio)], 1),
                         ar_attention_mask(text.shape[1], audio.shape[1]), cache=cache, start=0)
        for step in range(STEPS):
            position = text.shape[1] + audio.shape[1] + step
            start = time.perf_counter()
            frame = model.embed_ar_audio(codes0[step % len(codes0)].view(1, 1), offset=audio.shape[1] + step)
            model.ar_decoder(frame, None, cache=cache, start=position)
            times.append(time.perf_counter() - start)
    return np.array(times) * 1e3


sampled = np.arange(0, STEPS + 1, 25)
recomputed = np.array([recomputed_ms(step) for step in sampled])
cached = cached_ms()
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(sampled, recomputed, "o-", color="tab:red", ms=3, label="recompute everything (every 25th step timed)")
ax.plot(cached, color="tab:green", lw=0.8, label="KV cache (every step timed)")
ax.set_ylim(0, np.percentile(np.concatenate([recomputed, cached]), 99) * 1.2)
ax.set_xlabel(f"AR step (the sequence is {text.shape[1]} text + {prompt_codes.shape[1] + 1} prompt positions + step)")
ax.set_ylabel("ms per step")
ax.set_title(f"AR step time, {model.config.num_layers}-layer model, one CPU thread", fontsize=10)
ax.legend(fontsize=8)
show(fig)
print(f"step {STEPS}: {recomputed[-1]:.1f} ms recomputing vs {np.median(cached[-50:]):.2f} ms with the cache; "
      f"{STEPS} steps would take ~{np.interp(np.arange(STEPS), sampled, recomputed).sum() / 1e3:.1f} s vs "
      f"{cached.sum() / 1e3:.2f} s")

# %% [markdown]
# ### Temperature and top-k
#
# The logits of one step define a distribution over 1025 ids. Dividing the logits by a **temperature**
# below 1 sharpens it (more stable, less varied speech), above 1 flattens it; **top-k** keeps only the k
# most likely ids and renormalises.
#
# Where to see this matters. Our random model's logits are nearly flat (its first step has ~9.8 bits of
# entropy, close to the 10 of a uniform choice), and on flat logits temperature changes almost nothing. A
# trained model is confident: its distributions put most of the mass on a few codes (notebook 6 measures the
# tiny trained model's: a median of about one bit per step on its training sentences). So here we build such
# logits **by hand**, with a Zipf-like shape (the *r*-th most likely code gets a logit of −2.5·ln *r*, in a
# random order over the ids), and watch what the two knobs do to it.

# %%
ranks = torch.randperm(1025, generator=torch.Generator().manual_seed(0)) + 1  # each id's rank, 1..1025
peaked = (-2.5 * ranks.float().log())[None]  # [1, 1025]: built by hand, shaped like a trained model's
flat = step_logits[0][None].float()  # [1, 1025]: the random model's first step


def entropy_bits(probs: torch.Tensor) -> float:
    kept = probs[probs > 0]
    return -(kept * kept.log2()).sum().item()


settings = [(0.5, None), (1.0, None), (2.0, None), (1.0, 10)]
fig, axes = plt.subplots(1, 2, figsize=(12, 3.2), sharey=True)
for ax, logits, name in ((axes[0], peaked, "peaked logits (built by hand)"), (axes[1], flat, "random model's logits")):
    for temperature, top_k in settings:
        probs = torch.softmax(filter_logits(logits / temperature, top_k=top_k), -1)[0]
        label = f"T={temperature}" + (f", top_k={top_k}" if top_k else "") + f": {entropy_bits(probs):.1f} bits"
        ax.semilogy(np.arange(1, 61), probs.sort(descending=True).values[:60].numpy(), "--" if top_k else "-",
                    label=label)
    ax.set_ylim(1e-5, 1)
    ax.set_xlabel("rank of the code")
    ax.set_title(f"{name}: the 60 most likely of 1025 ids", fontsize=10)
    ax.legend(fontsize=8, title="setting: entropy", title_fontsize=8)
axes[0].set_ylabel("probability")
show(fig)

# %% [markdown]
# On the peaked logits the knobs matter: T = 0.5 concentrates almost all the mass on the top few codes, T = 2
# spreads it over hundreds, and top-k = 10 cuts the tail off completely, so no rare code can ever be drawn.
# On the random model's nearly flat logits only top-k changes anything visible. Notebook 6 shows what these
# settings do to whole utterances of a trained model: too greedy and the AR repeats itself forever, too
# random and it stops early or wanders.
#
# ## 4.4 The NAR stages
#
# With codebook 0 of the new frames fixed, the NAR decoder runs 7 times: the lower rows of notebook 3's grid,
# one whole row per stage. Stage *i* sees the text, the prompt frames with all 8 codebooks summed (the prompt's
# acoustic detail), and the new frames with codebooks 0..*i* summed, and predicts codebook *i + 1* of every new
# frame at once, greedily.

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 2.3))
for ax, stage in zip(axes, (1, 2, 7)):
    draw_token_grid(ax, token_states(4, 10, nar_stage=stage), 4, f"NAR stage {stage}")
token_grid_legend(fig)
show(fig)

stages = []
codes = nar_decode(model, [NARInput(text, langs, prompt_codes, codes0[None])], on_stage=stages.append)[0]  # [1, T, 8]
print("stages run:", stages, "-> codes", tuple(codes.shape))
print("deterministic:", torch.equal(codes, nar_decode(model, [NARInput(text, langs, prompt_codes, codes0[None])])[0]))
timeline = torch.cat([prompt_codes, codes], dim=1)[0]  # [P + T, 8]

fig, ax = plt.subplots(figsize=(11, 2.6))
draw_codes(ax, timeline.T.numpy(), seconds=True)
ax.axvline(prompt_codes.shape[1] / FRAME_RATE, color="black", lw=2)
ax.set_xlabel("time (s): prompt | generated (black line)")
ax.set_yticks(range(8), [f"q{j}" for j in range(8)])
ax.set_ylabel("codebook")
ax.set_title("the actual codes, one colour per id: prompt (untrained codec) | q0 from the AR, q1-q7 from the NAR",
             fontsize=10)
show(fig)

# %% [markdown]
# ## 4.5 One call: `VallEX.synthesize`
#
# The API does all of the above (plus Vocos decoding) for every sentence. Cross-lingual: the English
# speaker's prompt, Mandarin text. Accent control (the paper's language-ID control of the foreign accent):
# the same Mandarin phonemes with the **English** language id, i.e. Mandarin spoken with an English accent.
#
# Each call reports its **real-time factor** (RTF): seconds of computing per second of audio made. Below 1 is
# faster than real time; the tiny random model here is far faster than the full one (see the README's speed
# tables for the 370 M-parameter model on this kind of CPU).

# %%
result = tts.synthesize_detailed("欢迎来到北京，今天天气很好。", prompt=prompt, language="zh", seed=1)
accented = tts.synthesize_detailed("欢迎来到北京，今天天气很好。", prompt=prompt, language="zh", accent="en", seed=1)
for name, synthesis in (("no accent", result), ("accent=en", accented)):
    sentence = synthesis.sentences[0]
    print(f"{name:10s} {synthesis.duration:5.2f} s of audio, {sentence.codes.shape[1]} frames, "
          f"stop: {sentence.stop_reason}, RTF {synthesis.timings['rtf']:.2f}")
a0, b0 = result.sentences[0].codes[0, :, 0], accented.sentences[0].codes[0, :, 0]
n = min(len(a0), len(b0))
print(f"same seed, different language id: {(a0[:n] == b0[:n]).float().mean():.0%} of the frames agree")
display(Audio(result.waveform, rate=SAMPLE_RATE, normalize=True))

# %% [markdown]
# Does the accent do nothing, then? The comparison above is the wrong instrument. With the same seed, both
# runs draw with the *same* random numbers, and two distributions that are close send the same random number
# to the same code; so sampled outputs can agree on most frames although every distribution moved.
# Measure the distributions instead: feed the *same* codes (the no-accent run's codebook 0) through the AR
# with each language id (teacher forcing: the AR part of the training forward, `training_forward`, notebook 5),
# and compare the two next-frame distributions at every step with the
# **Kullback-Leibler divergence** KL(p‖q) = Σ p log₂(p/q), in bits (0 when they are identical). For scale, the
# same measurement when the *words* change instead (another Mandarin sentence, the language ids unchanged).

# %%
def next_frame_distributions(text_ids: torch.Tensor, text_langs: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Teacher-forced AR distributions [T, 1025] over each of ``frames`` [T], after the prompt."""
    audio = torch.cat([prompt_codes[0, :, 0], frames])  # [P + T]: q0 of the prompt, then the frames
    codes = F.pad(audio[None, :, None], (0, 7))  # [1, P + T, 8]: only q0 reaches the AR
    batch = TrainingBatch(text_ids, torch.tensor([text_ids.shape[1]]), text_langs, codes, torch.tensor([len(audio)]))
    with torch.inference_mode():
        logits = training_forward(model, batch, train_stage="ar", keep_logits=True).ar_logits[0]  # [P + T + 1, 1025]
    return logits[prompt_codes.shape[1]:-1].softmax(-1)  # position i predicts frame i: the T frames' rows


def kl_bits(p: torch.Tensor, q: torch.Tensor) -> np.ndarray:
    return (F.kl_div(q.log(), p, reduction="none").sum(-1) / np.log(2)).numpy()


frames = a0[:300]  # the first 4 s of the no-accent run's codebook 0
accent_langs = language_ids(text.shape[1], enroll_len, prompt.language, "en")[None]
other = tokenize("我们明天下午三点在学校门口见面。", "zh")  # "Let's meet at the school gate at 3 tomorrow."
other_text = torch.tensor([prompt.text_ids + other.ids])
other_langs = language_ids(other_text.shape[1], enroll_len, prompt.language, other.langs)[None]
base = next_frame_distributions(text, langs, frames)
kl_accent = kl_bits(base, next_frame_distributions(text, accent_langs, frames))
kl_words = kl_bits(base, next_frame_distributions(other_text, other_langs, frames))

fig, ax = plt.subplots(figsize=(9, 2.8))
ax.plot(kl_words, color="tab:gray", lw=0.8, label=f"other words, same language ids: mean {kl_words.mean():.5f} bits")
ax.plot(kl_accent, color="tab:red", lw=0.8, label=f"same words, accent = en: mean {kl_accent.mean():.5f} bits")
ax.set_xlabel("AR step (frame)")
ax.set_ylabel("KL(no accent ‖ other), bits")
ax.set_ylim(0, None)
ax.legend(fontsize=8)
ax.set_title("how far each next-frame distribution moves (random weights)", fontsize=10)
show(fig)

# %% [markdown]
# Every step's distribution moves when the language id changes: the accent is an input the model reads at
# every frame. The moves are tiny here (thousandths of a bit) because random weights barely react to any
# input; changing every word moves them even less, since a random model's attention averages the text, while
# the language id shifts every target token the same way. None of these sizes says anything about a trained
# checkpoint, and what an accent *sounds* like needs the real weights (`VALLEX_WEIGHTS_DIR`). The lesson is the
# instrument: to see what an input does to an AR model, compare its distributions, not two samples.
#
# ## 4.6 Long text
#
# The model was trained on short utterances, so long text is split into sentences (notebook 1) and spoken
# one by one. Two ways to keep the voice (the reference's modes): **fixed-prompt** reuses the user's prompt
# for every sentence; **sliding-window** uses each generated sentence as the prompt of the next, so the
# prosody flows on (and errors can too). Sentences are joined with a short pause.

# %%
paragraph = "今天天气很好。我们去公园散步吧！你觉得怎么样？"
long_result = tts.synthesize_detailed(paragraph, prompt=prompt, language="zh", long_text="sliding-window", seed=2)
for sentence in long_result.sentences:
    print(f"{sentence.text:12s} {sentence.codes.shape[1]:4d} frames ({sentence.stop_reason})")

fig, ax = plt.subplots(figsize=(11, 1.8))
edge = 0.0
for i, sentence in enumerate(long_result.sentences):
    seconds = sentence.codes.shape[1] / FRAME_RATE
    ax.barh(0, seconds, left=edge, color=f"C{i}", alpha=0.6)
    ax.text(edge + seconds / 2, 0, f"sentence {i + 1}: {sentence.codes.shape[1]} frames", ha="center", va="center",
            fontsize=9)
    edge += seconds
    if i < len(long_result.sentences) - 1:
        edge += SENTENCE_PAUSE_SECONDS  # the pause the API inserts between sentences
print(f"total {edge:.2f} s; the waveform has {len(long_result.waveform) / SAMPLE_RATE:.2f} s")
ax.set_xlim(0, edge)
ax.set_yticks([])
ax.set_xlabel(f"time (s); gaps: the {SENTENCE_PAUSE_SECONDS} s pause between sentences")
ax.set_title("long text, sliding-window mode: one utterance per sentence, each the prompt of the next", fontsize=10)
show(fig)
