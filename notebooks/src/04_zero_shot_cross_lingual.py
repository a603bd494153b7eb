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
# This notebook does each step by hand with `vallex.inference.decoding` and the model, checks it against the library,
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
import io
import os
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # render off-screen; figures are embedded as PNG below
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Audio, Image, display

from vallex.api import VallEX
from vallex.audio import FRAME_RATE, SAMPLE_RATE
from vallex.inference.decoding import NARInput, ar_decode, filter_logits, language_ids, nar_decode, sample_tokens
from vallex.inference.fastpath import KVCache
from vallex.inference.scheduler import SENTENCE_PAUSE_SECONDS
from vallex.model import ar_attention_mask
from vallex.text import tokenize
from vallex.weights import resolve_weights
from vallex.weights.random_weights import make_random_weights

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto, imported by vocos
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # jieba's import, harmless


def show(fig) -> None:
    """Embed a matplotlib figure in the notebook output as a PNG and free it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    display(Image(buffer.getvalue()))


workdir = Path(tempfile.mkdtemp(prefix="vallex-nb04-"))
WEIGHTS_DIR = os.environ.get("VALLEX_WEIGHTS_DIR")
if not WEIGHTS_DIR:
    make_random_weights(workdir / "weights", size="tiny", seed=0)
weights_dir = WEIGHTS_DIR or workdir / "weights"
tts = VallEX.from_pretrained(weights_dir=weights_dir, device="cpu")  # the cells below build tensors on the CPU
model = tts.model
RANDOM_WEIGHTS = resolve_weights(weights_dir, download=False).random
print("weights:", weights_dir, "- RANDOM (offline demo: the audio is noise)" if RANDOM_WEIGHTS else "")
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
print(f"by hand: {len(codes0)} frames; vallex.inference.decoding.ar_decode: {library.codes.shape[1]} frames ({library.stop_reason})")
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


def time_steps(use_cache: bool, steps: int = 40) -> list[float]:
    """Seconds per AR step, with the cache or recomputing the whole sequence every step."""
    times = []
    with torch.inference_mode():
        text_emb = model.embed_text("ar", text, langs)
        audio = torch.cat([torch.tensor([[model.config.bos_id]]), prompt_codes[..., 0]], dim=1)
        cache = KVCache.allocate(model.config, 1, text.shape[1] + audio.shape[1] + steps, "cpu", text_emb.dtype)
        model.ar_decoder(torch.cat([text_emb, model.embed_ar_audio(audio)], 1),
                         ar_attention_mask(text.shape[1], audio.shape[1]), cache=cache, start=0)
        for step in range(steps):
            audio = torch.cat([audio, codes0[step % len(codes0)].view(1, 1)], dim=1)
            start = time.perf_counter()
            if use_cache:
                model.ar_decoder(model.embed_ar_audio(audio[:, -1:], offset=audio.shape[1] - 1), None,
                                 cache=cache, start=text.shape[1] + audio.shape[1] - 1)
            else:
                x = torch.cat([text_emb, model.embed_ar_audio(audio)], 1)
                model.ar_decoder(x, ar_attention_mask(text.shape[1], audio.shape[1]))
            times.append(time.perf_counter() - start)
    return times


fig, ax = plt.subplots(figsize=(6.5, 2.8))
ax.plot(np.array(time_steps(False)) * 1e3, label="recompute everything")
ax.plot(np.array(time_steps(True)) * 1e3, label="KV cache")
ax.set_xlabel("AR step")
ax.set_ylabel("ms per step")
ax.set_title(f"AR step time, {model.config.num_layers}-layer model (one CPU thread)", fontsize=10)
ax.legend()
show(fig)

# %% [markdown]
# ### Temperature and top-k
#
# The logits of one step define a distribution over 1025 ids. Dividing the logits by a **temperature**
# below 1 sharpens it (more stable, less varied speech), above 1 flattens it; **top-k** keeps only the k
# most likely ids. With random weights the distribution is nearly flat; a trained model puts most of the
# mass on a few codes.

# %%
logits = step_logits[0][None].float()  # [1, 1025] of the first step
fig, ax = plt.subplots(figsize=(7, 3))
settings = [(0.5, None), (1.0, None), (2.0, None), (1.0, 10)]
for temperature, top_k in settings:
    probs = torch.softmax(filter_logits(logits / temperature, top_k=top_k), -1)[0]
    entropy = -(probs[probs > 0] * probs[probs > 0].log2()).sum().item()
    label = f"temperature {temperature}" + (f", top_k={top_k}" if top_k else "")
    ax.semilogy(probs.sort(descending=True).values[:60].numpy(), "--" if top_k else "-", label=label)
    print(f"{label:28s} entropy {entropy:5.2f} bits = like choosing among {2 ** entropy:6.1f} equally likely codes")
ax.set_ylim(1e-4, 1)
ax.set_xlabel("rank of the code")
ax.set_ylabel("probability")
ax.set_title("first AR step: the 60 most likely of 1025 ids", fontsize=10)
ax.legend(fontsize=8)
show(fig)

# %% [markdown]
# ## 4.4 The NAR stages
#
# With codebook 0 of the new frames fixed, the NAR decoder runs 7 times. Stage *i* sees the text, the
# prompt frames with all 8 codebooks summed (the prompt's acoustic detail), and the new frames with
# codebooks 0..*i* summed, and predicts codebook *i + 1* of every new frame at once, greedily.

# %%
stages = []
codes = nar_decode(model, [NARInput(text, langs, prompt_codes, codes0[None])], on_stage=stages.append)[0]  # [1, T, 8]
print("stages run:", stages, "-> codes", tuple(codes.shape))
print("deterministic:", torch.equal(codes, nar_decode(model, [NARInput(text, langs, prompt_codes, codes0[None])])[0]))
timeline = torch.cat([prompt_codes, codes], dim=1)[0]  # [P + T, 8]

fig, ax = plt.subplots(figsize=(11, 2.6))
ax.imshow(timeline.T.numpy(), aspect="auto", cmap="nipy_spectral", interpolation="nearest",
          extent=(0, timeline.shape[0] / FRAME_RATE, 7.5, -0.5))
ax.axvline(prompt_codes.shape[1] / FRAME_RATE, color="white", lw=2)
ax.set_xlabel("time (s): prompt | generated (white line)")
ax.set_ylabel("codebook")
ax.set_title("codebook 0 of the new frames from the AR decoder, codebooks 1-7 from the 7 NAR stages", fontsize=10)
show(fig)

# %% [markdown]
# ## 4.5 One call: `VallEX.synthesize`
#
# The API does all of the above (plus Vocos decoding) for every sentence. Cross-lingual: the English
# speaker's prompt, Mandarin text. Accent control (the paper's language-ID control of the foreign accent):
# the same Mandarin phonemes with the **English** language id, i.e. Mandarin spoken with an English accent.

# %%
result = tts.synthesize_detailed("欢迎来到北京，今天天气很好。", prompt=prompt, language="zh", seed=1)
accented = tts.synthesize_detailed("欢迎来到北京，今天天气很好。", prompt=prompt, language="zh", accent="en", seed=1)
for name, synthesis in (("no accent", result), ("accent=en", accented)):
    sentence = synthesis.sentences[0]
    print(f"{name:10s} {synthesis.duration:5.2f} s of audio, {sentence.codes.shape[1]} frames, "
          f"stop: {sentence.stop_reason}, real-time factor {synthesis.timings['rtf']:.2f}")
same_prefix = (result.sentences[0].codes[0, :, 0][:20] == accented.sentences[0].codes[0, :, 0][:20]).float().mean()
print(f"same seed, different language id: {same_prefix:.0%} of the first 20 frames agree")
display(Audio(result.waveform, rate=SAMPLE_RATE, normalize=True))

# %% [markdown]
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

fig, ax = plt.subplots(figsize=(11, 2.4))
t = np.arange(len(long_result.waveform)) / SAMPLE_RATE
ax.plot(t, long_result.waveform, lw=0.3)
edge = 0.0
for sentence in long_result.sentences[:-1]:
    edge += sentence.codes.shape[1] / FRAME_RATE
    ax.axvline(edge, color="tab:red", lw=1)
    edge += SENTENCE_PAUSE_SECONDS  # the pause the API inserts between sentences
ax.set_xlabel("time (s); red: end of each sentence")
ax.set_title("long text, sliding-window mode: one utterance per sentence", fontsize=10)
show(fig)
