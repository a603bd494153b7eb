"""``TextTokens``: what every text front end (the checkpoint's G2P, espeak-ng) gives the model for one utterance."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TextTokens:
    """The model's view of one utterance's text.

    Attributes:
        ids: text-token ids, one per phoneme character, no BOS/EOS: each in 0..69 (``len(SYMBOLS)``) for
            en/zh/ja, in the espeak-ng table (``ESPEAK_SYMBOLS``, a superset) for other languages.
            As a tensor: LongTensor [1, L].
        langs: language of each id ("en", "zh", "ja", or another language of the model); ``len(langs) == len(ids)``.
        phonemes: the cleaned phoneme string (spaces not yet turned into ``_``); ``len == len(ids)``.
        language: the language used: a language code, or "mix" for tagged/automatically tagged text.
        tagged_text: the text the cleaner saw, e.g. ``[EN]Hello.[EN]`` (the text itself for espeak-ng languages).
    """

    ids: list[int]
    langs: list[str]
    phonemes: str
    language: str
    tagged_text: str

    def __len__(self) -> int:
        return len(self.ids)
