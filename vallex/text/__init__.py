"""Text front end: user text -> the phoneme token ids and per-token languages of the VALL-E X checkpoint.

Main entry points::

    from vallex.text import tokenize
    tokens = tokenize("Hello, world!", language="auto")   # TextTokens(ids, langs, phonemes, ...)
    tokens = tokenize("Guten Tag!", "auto", languages=tts.languages)  # a model trained on German: espeak-ng "de"

Importing this package loads no G2P resources; each language's tools load on first use.
"""
from .espeak import ESPEAK_SYMBOLS, EspeakFrontend
from .frontend import (
    MAX_TOKENS,
    TOKENIZE_LANGUAGES,
    TextTokens,
    prepare_text,
    tag_text,
    tokenize,
    tokenize_language,
)
from .japanese import JapaneseDictionaryNotFound
from .language import auto_tag, detect_language
from .normalize import MAX_INPUT_CHARS, normalize_text
from .sentences import split_sentences
from .symbols import SYMBOL_TO_ID, SYMBOLS, UNK_ID, ids_to_phonemes, phonemes_to_ids

__all__ = [
    "ESPEAK_SYMBOLS", "EspeakFrontend", "JapaneseDictionaryNotFound", "MAX_INPUT_CHARS", "MAX_TOKENS",
    "SYMBOLS", "SYMBOL_TO_ID", "TOKENIZE_LANGUAGES", "TextTokens", "UNK_ID", "auto_tag", "detect_language",
    "ids_to_phonemes", "normalize_text", "phonemes_to_ids", "prepare_text", "split_sentences", "tag_text",
    "tokenize", "tokenize_language",
]
