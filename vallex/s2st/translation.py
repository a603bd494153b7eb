"""Text translation between English, Mandarin and Japanese with a ``transformers`` seq2seq model.

    translator = load_translator()                              # NLLB-200 distilled 600M (all six directions)
    translator.translate("How are you?", source="en", target="zh")

Three model families are understood, told apart by their tokenizer:

* NLLB-200 (``facebook/nllb-200-*``): codes ``eng_Latn``/``zho_Hans``/``jpn_Jpan``, any direction;
* M2M-100 (``facebook/m2m100_*``): codes ``en``/``zh``/``ja``, any direction;
* MarianMT (``Helsinki-NLP/opus-mt-*``): one direction per model, given as ``source``/``target`` when the
  translator is made (``load_translator("Helsinki-NLP/opus-mt-en-zh", source="en", target="zh")``).

Anything with a ``translate(text, source, target) -> str`` method (or a plain function of those three
arguments) can replace it in the pipeline. Models load lazily, once, from the Hugging Face cache or a
local folder; offline, a missing model raises :class:`ModelUnavailableError`.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from vallex.languages import check_language
from vallex.optional_models import ModelUnavailableError, check_folder_exists, hub_offline, import_transformers

#: One model for all six directions between en/zh/ja (``$VALLEX_MT_MODEL`` overrides it).
DEFAULT_MT_MODEL = "facebook/nllb-200-distilled-600M"
MT_MODEL_ENV = "VALLEX_MT_MODEL"

#: What to do about a missing translation model, in words that fit every interface (the CLI adds its flags).
REMEDY = ("Download it once while online, or point the translator at a local model folder "
          f"(${MT_MODEL_ENV}), or give the translation yourself so that no translation model is needed.")

#: FLORES-200 codes used by NLLB for our languages (Mandarin in simplified script).
NLLB_CODES: dict[str, str] = {"en": "eng_Latn", "zh": "zho_Hans", "ja": "jpn_Jpan"}


@runtime_checkable
class TextTranslator(Protocol):
    """Translates text between two of en/zh/ja."""

    def translate(self, text: str, source: str, target: str) -> str:
        """``text`` in ``source`` → the same meaning in ``target`` (language codes "en", "zh", "ja")."""


TranslatorLike = TextTranslator | Callable[[str, str, str], str]


def load_translator(model: str | os.PathLike | None = None, *, source: str | None = None,
                    target: str | None = None, device: str = "cpu") -> TransformersTranslator:
    """A lazily loading translator for ``model`` (default ``$VALLEX_MT_MODEL`` or NLLB-200 600M)."""
    if model is None:
        model = os.environ.get(MT_MODEL_ENV, "").strip() or DEFAULT_MT_MODEL
    return TransformersTranslator(str(model), source=source, target=target, device=device)


def as_translator(translator: TranslatorLike) -> TextTranslator:
    """Accept an object with ``translate(text, source, target)`` or a plain function of those arguments."""
    if isinstance(translator, TextTranslator):
        return translator
    if callable(translator):
        return _FunctionTranslator(translator)
    raise ValueError("A translator must have a translate(text, source, target) method or be such a function.")


class _FunctionTranslator:
    def __init__(self, function: Callable[[str, str, str], str]):
        self.function = function

    def translate(self, text: str, source: str, target: str) -> str:
        return str(self.function(text, source, target))


class TransformersTranslator:
    """A ``transformers`` seq2seq translation model (NLLB, M2M-100 or MarianMT), beam search.

    Args:
        model: Hugging Face repository id or a local folder saved with ``save_pretrained``.
        source, target: the one direction of a single-pair model (MarianMT); leave None for NLLB/M2M-100.
        num_beams: beam width (4 balances quality and CPU time).
    """

    def __init__(self, model: str, *, source: str | None = None, target: str | None = None,
                 device: str = "cpu", num_beams: int = 4):
        if (source is None) != (target is None):
            raise ValueError("Give both source and target for a one-direction translation model, or neither.")
        self.name = model
        self.pair = (check_language(source), check_language(target)) if source is not None else None
        self.device = device
        self.num_beams = num_beams
        self._model: Any = None
        self._tokenizer: Any = None
        self._family = ""
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TransformersTranslator({self.name!r}, pair={self.pair})"

    @classmethod
    def from_objects(cls, model: Any, tokenizer: Any, *, source: str | None = None, target: str | None = None,
                     name: str = "in-memory", num_beams: int = 4) -> TransformersTranslator:
        """Wrap an already loaded seq2seq model and its tokenizer."""
        translator = cls(name, source=source, target=target, device=str(next(model.parameters()).device),
                         num_beams=num_beams)
        translator._set(model, tokenizer)
        return translator

    @property
    def family(self) -> str:
        """"nllb", "m2m100" or "marian" (known after loading)."""
        self.load()
        return self._family

    def load(self) -> None:
        """Load the model now; :class:`ModelUnavailableError` if it is not installed or not on disk."""
        with self._lock:
            if self._model is not None:
                return
            check_folder_exists(self.name, "Translation model", "Expected a folder saved with save_pretrained "
                                "(NLLB, M2M-100 or MarianMT) or a Hugging Face repository id.")
            try:
                transformers = import_transformers()
            except ImportError:
                raise ModelUnavailableError(
                    "Text translation needs the transformers package: `pip install 'vallex[s2st]'`. Or give the "
                    "translation yourself so that no translation model is needed."
                ) from None
            offline = hub_offline()
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(self.name, local_files_only=offline)
                model = transformers.AutoModelForSeq2SeqLM.from_pretrained(self.name, local_files_only=offline)
            except (OSError, ValueError) as error:
                raise ModelUnavailableError(
                    f"Translation model {self.name!r} could not be loaded"
                    f"{' offline (HF_HUB_OFFLINE is set)' if offline else ''}: {str(error).splitlines()[0]}. "
                    f"{REMEDY}"
                ) from None
            self._set(model.to(self.device), tokenizer)

    def _set(self, model: Any, tokenizer: Any) -> None:
        kind = type(tokenizer).__name__.lower()
        if "nllb" in kind:
            self._family = "nllb"
        elif "m2m" in kind or getattr(model.config, "model_type", "") == "m2m_100":
            self._family = "m2m100"
        else:
            self._family = "marian"
            if self.pair is None:
                # Marian tokenizers record their direction (opus-mt tokenizer_config.json: source_lang/target_lang).
                pair = (getattr(tokenizer, "source_lang", None), getattr(tokenizer, "target_lang", None))
                if not all(code in ("en", "zh", "ja") for code in pair):
                    raise ValueError(
                        f"{self.name} translates one direction only, and its tokenizer does not say which "
                        f"(source_lang/target_lang: {pair}). Say it: load_translator(path, source='en', target='zh')."
                    )
                self.pair = (str(pair[0]), str(pair[1]))
        self._model, self._tokenizer = model.eval(), tokenizer

    def translate(self, text: str, source: str, target: str) -> str:
        """``text`` in ``source`` → ``target``; "" in, "" out."""
        import torch

        check_language(source)
        check_language(target)
        if not text.strip():
            return ""
        self.load()
        if self.pair is not None and self.pair != (source, target):
            raise ValueError(
                f"The translation model {self.name} translates {self.pair[0]}→{self.pair[1]}, not "
                f"{source}→{target}. Use a model for that direction (or a multilingual one such as NLLB-200)."
            )
        tokenizer, options = self._tokenizer, {}
        if self._family == "nllb":
            tokenizer.src_lang = NLLB_CODES[source]
            options["forced_bos_token_id"] = tokenizer.convert_tokens_to_ids(NLLB_CODES[target])
        elif self._family == "m2m100":
            tokenizer.src_lang = source
            options["forced_bos_token_id"] = tokenizer.get_lang_id(target)
        inputs = tokenizer(text.strip(), return_tensors="pt", truncation=True).to(self.device)
        limit = int(getattr(self._model.config, "max_position_embeddings", 512) or 512) - 2
        # A translation is rarely more than twice as many tokens as its source.
        max_new = max(8, min(limit, 2 * inputs["input_ids"].shape[1] + 16))
        with torch.no_grad():
            ids = self._model.generate(**inputs, num_beams=self.num_beams, max_new_tokens=max_new, **options)
        return tokenizer.batch_decode(ids, skip_special_tokens=True)[0].strip()


__all__ = ["DEFAULT_MT_MODEL", "NLLB_CODES", "TextTranslator", "TransformersTranslator",
           "TranslatorLike", "as_translator", "load_translator"]
