# %% [markdown]
# # 1. The text front end: from text to phonemes to ids
#
# VALL-E X (Zhang et al. 2023, [arXiv 2303.03926](https://arxiv.org/abs/2303.03926)) never reads letters.
# Its Figure 1 and §3 condition the model on **phoneme sequences** of the prompt's transcript (the
# *source* text) and of the text to speak (the *target* text), produced by grapheme-to-phoneme (G2P)
# conversion, plus a **language ID**. Phonemes are the natural currency for a cross-lingual model: what it
# must learn is how *sounds* become speech, and sounds are shared between languages where spellings are not.
#
# This notebook follows one utterance through `vallex.text`:
#
# 1. the shared 70-symbol phoneme table,
# 2. `tokenize(text, language)` in English, Mandarin and Japanese (normalisation, tags, G2P, ids),
# 3. language detection and mixed-language (code-switched) text with per-token language ids,
# 4. what accent control changes (and what it does not),
# 5. long text: sentence splitting,
# 6. other languages through espeak-ng (for training a new language).
#
# Three **exercises** ask you to write a piece of it yourself: the id table lookup (1.2), the automatic
# tagging of mixed text (1.3) and the per-token language ids the model receives (1.4). Each has a cell to fill
# in (it runs as shipped, and is wrong), a check cell that compares your code with `vallex.text` and prints
# `✓` or what is not right yet, and the outcome to expect. The answers are in `notebooks/exercises/nb01.py`.
#
# > **Runs offline and needs no model weights at all.** The G2P tools (eng-to-ipa's CMU dictionary,
# > pypinyin + jieba, OpenJTalk with Debian's dictionary, espeak-ng) are local. With real weights installed
# > nothing here changes: the text front end is the same for random and trained models.

# %%
import warnings
from collections import Counter

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from tutorial import show  # figures as small PNGs (notebooks/tutorial.py)

from vallex.inference.generation import language_ids
from vallex.text import (
    MAX_TOKENS,
    SYMBOL_TO_ID,
    SYMBOLS,
    auto_tag,
    detect_language,
    ids_to_phonemes,
    phonemes_to_ids,
    split_sentences,
    tokenize,
)
from vallex.text.symbols import SPECIAL_TOKENS

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # jieba's import, harmless

# Matplotlib's default font has no CJK glyphs; use one that does when the machine has it.
from matplotlib import font_manager

CJK_FONTS = [f.name for f in font_manager.fontManager.ttflist if "WenQuanYi" in f.name or "Noto Sans CJK" in f.name]
if CJK_FONTS:
    plt.rcParams["font.family"] = ["DejaVu Sans", CJK_FONTS[0]]


# %% [markdown]
# ## 1.1 One table for three languages
#
# The public checkpoint's text vocabulary (the reference's `bpe_69.json`) is in effect a **character table
# of 70 entries**: five special tokens (only `[UNK]` = 0 ever appears) and 65 phoneme characters, one id
# per character; a word boundary (space) becomes `_`. English, Mandarin and Japanese all write into this one
# table, so the `s` of "sun" and the `s` of 三 (*san*) are the same token.

# %%
print(f"{len(SYMBOLS)} symbols: {len(SPECIAL_TOKENS)} special tokens, {len(SYMBOLS) - len(SPECIAL_TOKENS)} phoneme characters")
for start in range(0, len(SYMBOLS), 14):
    print("  ".join(f"{i:2d}:{SYMBOLS[i]}" for i in range(start, min(start + 14, len(SYMBOLS)))))
assert (len(SYMBOLS), len(SPECIAL_TOKENS), SYMBOLS[0]) == (70, 5, "[UNK]")  # the numbers of the prose above

s_id = SYMBOL_TO_ID["s"]
sun, san = tokenize("sun", "en"), tokenize("三", "zh")  # 三 = "three", read sān
assert s_id in sun.ids and s_id in san.ids
print(f"'sun' -> {sun.phonemes!r} {sun.ids}; '三' -> {san.phonemes!r} {san.ids}: the s is id {s_id} in both")

# %% [markdown]
# ## 1.2 `tokenize`: text → tagged text → phonemes → ids
#
# `tokenize(text, language)` does what the reference does before the model sees anything:
#
# * normalise the text: every kind of space becomes " ", invisible characters go, and scripts the model
#   cannot speak (Hangul, Cyrillic, ...) are refused with a clear error; each language's cleaner then reads
#   numbers and currency out ("$3.50" → "three dollars, fifty cents", 3个 → 三个),
# * wrap it in its language tag (`[EN]…[EN]`), which tells the cleaner which G2P to run,
# * convert to phonemes: English IPA with stress marks `ˈ ˌ`; Mandarin pinyin → IPA with tone arrows
#   `→ ↑ ↓↑ ↓`; Japanese OpenJTalk → romaji-like IPA with pitch-accent marks `↑ ↓`,
# * map each character to its id and record the language of each id.

# %%
examples = [
    ("It costs $3.50 on Jan. 5th.", "en"),
    ("我有3个苹果。", "zh"),  # "I have 3 apples."
    ("東京タワーは333メートルです。", "ja"),  # "Tokyo Tower is 333 metres tall."
]
tokenized = {}
for text, language in examples:
    tokens = tokenize(text, language)
    tokenized[language] = tokens
    print(f"text      {text}")
    print(f"tagged    {tokens.tagged_text}")
    print(f"phonemes  {tokens.phonemes}")
    print(f"ids       {tokens.ids[:24]}{' ...' if len(tokens) > 24 else ''}  ({len(tokens)} tokens)")
    print(f"round trip ids -> phonemes: {ids_to_phonemes(tokens.ids)!r}\n")

# %% [markdown]
# ### Exercise 1: the table lookup
#
# The last step of `tokenize` is a plain lookup. Write `my_phonemes_to_ids(phonemes)`: one id per character,
# the position of the character in `SYMBOLS`; a space (word boundary) is the symbol `_`; a character the table
# does not have (espeak-ng's length mark `ː`, say) becomes `[UNK]`, id 0. The check compares your function with
# `vallex.text.phonemes_to_ids` on phonemes of all three languages.
#
# **Expected:** as shipped, the cell returns Unicode code points (`ord`), which are not the model's ids, and the
# check prints `✗ not yet` with the first position where it differs; with the table it prints `✓`.

# %%
def my_phonemes_to_ids(phonemes: str) -> list[int]:
    return [ord(char) for char in phonemes]  # TODO: ids from the SYMBOLS table ("_" for a space, 0 if unknown)


print("yours:  ", my_phonemes_to_ids("san→k⁼ə↓"))
print("library:", phonemes_to_ids("san→k⁼ə↓"))

# %%
from exercises import report
from exercises.nb01 import check_phonemes_to_ids

_ = report("phonemes to ids", check_phonemes_to_ids, my_phonemes_to_ids)

# %% [markdown]
# Which symbols does each language use? Counting the symbols of a few sentences per language shows the
# shared core (vowels, common consonants, the word boundary `_`, punctuation) and the language-specific
# marks: English stress, Mandarin tones, Japanese pitch accent and devoicing (`*`).

# %%
corpus = {
    "en": ["The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
           "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish."],
    "zh": ["今天天气很好，我们去公园散步吧。", "他每天早上六点起床跑步。", "这本书非常有意思，你应该读一读。",
           "我们明天下午三点在学校门口见面。"],
    "ja": ["今日はとても良い天気ですね。", "駅までどうやって行けばいいですか。", "この本はとても面白いので読んでください。",
           "明日の午後三時に学校の前で会いましょう。"],
}
counts = {lang: Counter(i for sentence in sentences for i in tokenize(sentence, lang).ids)
          for lang, sentences in corpus.items()}
used = sorted(set().union(*counts.values()))
matrix = np.array([[counts[lang][i] for i in used] for lang in corpus], dtype=float)
matrix /= matrix.sum(axis=1, keepdims=True)  # share of each symbol within a language

fig, ax = plt.subplots(figsize=(13, 2.4))
image = ax.imshow(matrix, aspect="auto", cmap="Greens", norm=matplotlib.colors.PowerNorm(0.4))  # rare symbols too
ax.set_yticks(range(3), list(corpus))
ax.set_xticks(range(len(used)), [SYMBOLS[i] for i in used], fontsize=9)
ax.set_title("share of each phoneme symbol per language (columns: symbols used by at least one language)", fontsize=10)
fig.colorbar(image, ax=ax, pad=0.01, label="share", ticks=[0, 0.01, 0.05, 0.1, 0.2])
show(fig)
shared = [SYMBOLS[i] for i in used if all(counts[lang][i] for lang in corpus)]
print(f"{len(used)} of {len(SYMBOLS)} symbols used; {len(shared)} shared by all three languages: {' '.join(shared)}")

# %% [markdown]
# ## 1.3 Language detection and mixed text
#
# With `language="auto"` the language is detected once for the whole text (langid restricted to en/zh/ja,
# as the reference does). Script alone cannot always decide: kanji-only Japanese looks like Mandarin.
#
# Code-switched text needs per-segment languages. The reference reads **tags**
# (`[EN]Hello[EN][ZH]你好[ZH]`, `language="mix"`); our `language="auto-mix"` writes the tags for you by
# splitting runs of Latin and CJK script (`vallex.text.auto_tag`). Every token then carries its own
# segment's language, and the model receives one language id per token (notebook 3, section 3.7).

# %%
for text in ["The quick brown fox.", "我们今天去公园散步。", "今日はいい天気ですね。", "東京都"]:
    print(f"{text:24s} -> {detect_language(text)}")
print()
mixed = "我喜欢 machine learning 和 deep learning。"  # "I like machine learning and deep learning."
print("auto_tag:", auto_tag(mixed))
mixed_tokens = tokenize(mixed, "auto-mix")
print("phonemes:", mixed_tokens.phonemes)
print("tagged by hand, language='mix':", tokenize("[EN]Good morning.[EN][JA]おはようございます。[JA]", "mix").phonemes)

# %%
colors = {"en": "tab:blue", "zh": "tab:red", "ja": "tab:green"}
fig, ax = plt.subplots(figsize=(12, 1.3))
for x, (char, lang) in enumerate(zip(mixed_tokens.phonemes.replace(" ", "_"), mixed_tokens.langs)):
    ax.add_patch(plt.Rectangle((x, 0), 1, 1, color=colors[lang], alpha=0.35))
    ax.text(x + 0.5, 0.5, char, ha="center", va="center", fontsize=9)
ax.set_xlim(0, len(mixed_tokens))
ax.set_ylim(0, 1)
ax.axis("off")
ax.set_title(f"per-token language of {mixed!r}  (blue en, red zh)", fontsize=10)
show(fig)

# %% [markdown]
# ### Exercise 2: tag mixed text yourself
#
# Write `my_auto_tag(text)`, the rule `auto_tag` follows for the model's three languages. `script_of(char)`
# (from `vallex.text.normalize`) tells you a character's script: `"latin"`, `"han"`, `"kana"`, `"bopomofo"`,
# or something else (digits, spaces, punctuation: *neutral*).
#
# 1. Cut the text into runs of Latin letters and runs of CJK characters (han, kana, bopomofo). A neutral
#    character joins the run before it; neutral characters at the very start join the first run.
# 2. A Latin run is English. A CJK run is Japanese if the text has kana *anywhere*, otherwise Mandarin.
# 3. Merge neighbouring runs of the same language and wrap each in its tag: `[EN]…[EN]`, `[ZH]…[ZH]`, `[JA]…[JA]`.
#
# **Expected:** as shipped the cell tags the whole text English and the check prints `✗ not yet` with the
# first text it gets wrong; a right answer (about 15 lines) prints `✓`.

# %%
from vallex.text.normalize import script_of


def my_auto_tag(text: str) -> str:
    return f"[EN]{text}[EN]"  # TODO: runs of Latin / CJK script, each in its language's tags


print("yours:  ", my_auto_tag("今日はGoogleで検索した。"))
print("library:", auto_tag("今日はGoogleで検索した。"))
print("script_of:", {char: script_of(char) for char in "今はG。"})

# %%
from exercises.nb01 import check_auto_tag

_ = report("auto_tag", check_auto_tag, my_auto_tag)

# %% [markdown]
# ## 1.4 What accent control changes
#
# The paper's abstract: VALL-E X "alleviates the foreign accent problems, which can be controlled by a
# language ID". That ID is VALL-E X's one addition to VALL-E's input (§3). The text the model reads is the
# prompt's transcript followed by the target text, $\mathbf{x} = [\mathbf{x}^s; \mathbf{x}^t]$, and token $i$
# enters it as
#
# $$\mathbf{e}_i = E_{\text{text}}[x_i] + E_{\text{lang}}[\ell_i] \quad (+\ \text{position}),$$
#
# with $\ell_i$ the language of token $i$: the prompt's language for the transcript's tokens, each target
# token's own language (mixed text) or, under accent control, one language for all of them
# (`vallex/model.py`, `token(text) + language(text_langs)`). Accent control does **not** touch the phonemes:
# English text is still converted by the English G2P. It only replaces $\ell_i$ of every target token (here
# with Mandarin's), so the model pronounces English phonemes the way it learnt them from Mandarin speakers.

# %%
english = tokenize("Hello, how are you?", "en")
prompt = tokenize("你好。", "zh")  # a Mandarin voice prompt's transcript
total = len(prompt) + len(english)
print("phonemes (unchanged by the accent):", english.phonemes)
for accent in (None, "zh", "ja"):
    ids = language_ids(total, len(prompt), "zh", english.langs if accent is None else accent)
    print(f"accent={str(accent):5s} language ids: {ids.tolist()}")

# %% [markdown]
# ### Exercise 3: the language ids the model receives
#
# Write `my_language_ids(prompt_len, prompt_language, target_langs, accent)`: the list $\ell$ above for a prompt
# transcript of `prompt_len` tokens in `prompt_language`, followed by target tokens whose languages are
# `target_langs` (one per token, as `tokenize(...).langs` gives them); `accent` is None (each token keeps its
# language) or a language for every target token. The public checkpoint's rows are en = 0, zh = 1, ja = 2.
# The check compares with `vallex.inference.generation.language_ids` (what `generate` hands the model) on a
# Mandarin prompt before mixed text, accent control both ways, and text with no prompt.
#
# **Expected:** as shipped every id is 0 (English), so the check prints `✗ not yet` at the first Mandarin
# prompt token; the right three or four lines print `✓`.

# %%
def my_language_ids(prompt_len: int, prompt_language: str, target_langs: list[str], accent: str | None) -> list[int]:
    return [0] * (prompt_len + len(target_langs))  # TODO: prompt language, then each target token's (or accent's)


print("yours:  ", my_language_ids(len(prompt), "zh", mixed_tokens.langs, None))
print("library:", language_ids(len(prompt) + len(mixed_tokens), len(prompt), "zh", mixed_tokens.langs).tolist())

# %%
from exercises.nb01 import check_language_ids

_ = report("language ids", check_language_ids, my_language_ids)

# %% [markdown]
# ## 1.5 Long text
#
# The checkpoint was trained on short utterances (the API keeps prompt + output within
# `vallex.config.MAX_UTTERANCE_SECONDS`, printed below), so long text is synthesised sentence by sentence. `split_sentences` splits on sentence
# punctuation with rules that survive abbreviations, decimals and quotes, in all three languages; one
# utterance accepts at most `MAX_TOKENS` tokens.

# %%
print(split_sentences("Dr. Smith went to Washington. He arrived at 3.30 p.m. on Monday! Was it raining? No.", "en"))
print(split_sentences("今天天气很好。我们去公园吧！你觉得怎么样？", "zh"))
print(split_sentences("「はい。」と彼は言った。明日また来ます。", "ja"))
from vallex.config import MAX_UTTERANCE_SECONDS

print(f"MAX_TOKENS = {MAX_TOKENS}; MAX_UTTERANCE_SECONDS = {MAX_UTTERANCE_SECONDS:g}")
try:
    tokenize("This sentence is far too long for one utterance. " * 12, "en")
except ValueError as error:
    print("ValueError:", error)
for text, language in (("Bonjour", "fr"), ("Привет, мир", "auto")):
    try:
        tokenize(text, language)
    except ValueError as error:
        print("ValueError:", error)

# %% [markdown]
# ## 1.6 Beyond three languages: espeak-ng
#
# To *train* a new language (notebook 5 and `vallex/training`), `EspeakFrontend` phonemizes any language
# espeak-ng knows. Its symbol table starts with the checkpoint's symbols at the same ids and appends
# espeak's extra IPA symbols after them, so a fine-tuned model keeps the embedding rows it learnt for
# shared sounds (the checkpoint has more text-embedding rows than either table needs: the cell prints how many).

# %%
from vallex.config import VallexConfig
from vallex.text import ESPEAK_SYMBOLS, EspeakFrontend

assert ESPEAK_SYMBOLS[: len(SYMBOLS)] == SYMBOLS
rows = VallexConfig.named("public").text_vocab_size
print(f"checkpoint table: ids 0..{len(SYMBOLS) - 1}; espeak-ng table: {len(ESPEAK_SYMBOLS)} symbols, the new ones "
      f"from id {len(SYMBOLS)}; the checkpoint's text embedding has {rows} rows")
german = EspeakFrontend("de").tokenize("Guten Tag, wie geht es Ihnen?")
print(german.phonemes)
print(german.ids)
print("ids beyond the checkpoint's table:", sorted({(i, ESPEAK_SYMBOLS[i]) for i in german.ids if i >= len(SYMBOLS)}))

# %% [markdown]
# Once a model is trained on German, German is one of *its* languages (`tts.languages`, from the checkpoint), and
# `tokenize` with those languages reads German text exactly as `prepare-data` did (`EspeakFrontend("de")`):
# `"auto"` then detects among en, zh, ja and de, and `[DE]..[DE]` tags work in mixed text.

# %%
from vallex.languages import Languages

trained = Languages(("en", "zh", "ja", "de"))  # what a checkpoint trained on German says it speaks
detected = tokenize("Guten Tag, wie geht es Ihnen?", "auto", languages=trained)
print(detected.language, detected.ids == german.ids)  # de True
print(tokenize("Guten Tag, wie geht es Ihnen?", "auto").language)  # the public checkpoint: en (it knows no German)
print(tokenize("[EN]Hello.[EN][DE]Guten Tag.[DE]", "mix", languages=trained).langs)
