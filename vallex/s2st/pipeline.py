"""Speech-to-speech translation in the speaker's own voice (the VALL-E X paper's S2ST task).

    from vallex.s2st import SpeechTranslator
    s2st = SpeechTranslator.from_pretrained()                  # VALL-E X now; Whisper / NLLB on first need
    result = s2st.translate("me_speaking_chinese.wav", target="en", seed=0)
    result.transcript, result.translation                     # what was said, and its English translation
    result.waveform, result.sample_rate                       # float32 [N] at 24 kHz, in the speaker's voice

For each chunk of the source (long recordings are cut at pauses into chunks of at most 10 s):

1. **recognise**: Whisper gives the transcript and the spoken language (en, zh or ja; others are refused);
2. **translate**: to English with Whisper's own ``translate`` task on the same audio; to Mandarin or Japanese
   with a text translator (NLLB-200 by default, any :class:`~vallex.s2st.translation.TextTranslator`);
3. **speak**: the chunk's audio and transcript become the VALL-E X voice prompt (its EnCodec codes are the
   source audio's), and the translation is synthesised with the target language's accent embedding, so
   the voice is the speaker's and the pronunciation is native.

A transcript and a translation supplied by the caller replace steps 1 and 2 and need no ASR/MT model.
"""
from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vallex.asr import ASR_SAMPLE_RATE, LANGUAGE_NAMES, SpeechRecognizer, load_recognizer, spoken_language
from vallex.audio.codec_format import SAMPLE_RATE
from vallex.audio.loading import PROMPT_MAX_SECONDS, load_audio
from vallex.audio.processing import resample
from vallex.languages import LANGUAGE_ALIASES
from vallex.optional_models import ModelUnavailableError
from vallex.s2st.segment import MAX_CHUNK_SECONDS, split_speech
from vallex.s2st.translation import TextTranslator, TranslatorLike, as_translator, load_translator

if TYPE_CHECKING:
    from vallex.api import VallEX
    from vallex.prompts import VoicePrompt
    from vallex.synthesis.results import Synthesis

_LOG = logging.getLogger(__name__)

#: Longest source recording accepted (it is cut into <= 10 s chunks; each takes seconds to speak on CPU).
MAX_SOURCE_SECONDS = 300.0
#: Silence put between the translations of consecutive chunks.
CHUNK_PAUSE_SECONDS = 0.3
#: How English is reached: Whisper's translate task on the audio (as in the paper), or the text translator.
ENGLISH_ROUTES = ("whisper", "text")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")

ProgressCallback = Callable[[str, int, int], None]


@dataclass
class TranslatedChunk:
    """One chunk of the source and what became of it."""

    start: float  # seconds into the source recording
    end: float
    transcript: str  # what was said, in ``source_language``
    translation: str  # what was spoken, in the target language
    prompt: VoicePrompt  # the chunk's audio codes [1, T, 8] + transcript ids: the voice VALL-E X imitates
    synthesis: Synthesis  # the speech, with per-sentence codes and phonemes


@dataclass
class SpeechTranslation:
    """Everything :meth:`SpeechTranslator.translate` produced."""

    waveform: np.ndarray  # float32 [N] at 24 kHz
    sample_rate: int
    source_language: str
    target_language: str
    chunks: list[TranslatedChunk]
    #: Where the texts came from: "user", "whisper" (transcribe/translate task) or the translator's name.
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return len(self.waveform) / self.sample_rate

    @property
    def transcript(self) -> str:
        return _join([c.transcript for c in self.chunks], self.source_language)

    @property
    def translation(self) -> str:
        return _join([c.translation for c in self.chunks], self.target_language)


class SpeechTranslator:
    """Speech in one of en/zh/ja → speech in another, in the same voice. Models load once, on first need.

    Args:
        tts: the loaded :class:`~vallex.api.VallEX`.
        recognizer: a :class:`~vallex.asr.SpeechRecognizer`, or a model name/folder for
            :func:`~vallex.asr.load_recognizer` (default ``$VALLEX_ASR_MODEL`` or Whisper "medium").
        translator: a :class:`~vallex.s2st.translation.TextTranslator` (or a function ``(text, source,
            target) -> str``), or a model name/folder for :func:`~vallex.s2st.translation.load_translator`
            (default ``$VALLEX_MT_MODEL`` or NLLB-200 distilled 600M).
        english_via: "whisper" translates into English with Whisper's translate task (the paper's route);
            "text" uses the text translator for English too.
    """

    def __init__(self, tts: VallEX, *, recognizer: SpeechRecognizer | str | Path | None = None,
                 translator: TranslatorLike | str | Path | None = None, english_via: str = "whisper",
                 device: str | None = None):
        if english_via not in ENGLISH_ROUTES:
            raise ValueError(f"english_via must be 'whisper' or 'text', got {english_via!r}.")
        self.tts = tts
        self.english_via = english_via
        self.device = device or str(tts.device)  # where the ASR/MT models run
        self._models_lock = threading.Lock()  # the demo calls from several threads: make each model once
        self._recognizer_spec, self._recognizer = _spec_or_object(recognizer, SpeechRecognizer)
        self._translator_spec, self._translator = None, None
        if translator is None or isinstance(translator, (str, Path)):
            self._translator_spec = translator
        else:
            self._translator = as_translator(translator)

    @classmethod
    def from_pretrained(cls, weights_dir: str | Path | None = None, *, asr_model: str | Path | None = None,
                        mt_model: str | Path | None = None, english_via: str = "whisper",
                        device: str | None = None, **tts_options: Any) -> SpeechTranslator:
        """Load VALL-E X (see :meth:`VallEX.from_pretrained`); the ASR/MT models are named, loaded on first use."""
        from vallex.api import VallEX

        tts = VallEX.from_pretrained(weights_dir, device=device, **tts_options)
        return cls(tts, recognizer=asr_model, translator=mt_model, english_via=english_via)

    # Models ------------------------------------------------------------------------------------
    @property
    def recognizer(self) -> SpeechRecognizer:
        """The speech recogniser (made on first access; its weights load on first use)."""
        with self._models_lock:
            if self._recognizer is None:
                self._recognizer = load_recognizer(self._recognizer_spec, device=self.device)
        return self._recognizer

    @property
    def translator(self) -> TextTranslator:
        """The text translator (made on first access; its weights load on first use)."""
        with self._models_lock:
            if self._translator is None:
                self._translator = load_translator(self._translator_spec, device=self.device)
        return self._translator

    def _load(self, need_recognizer: bool, need_translator: bool) -> None:
        """Load the models a request needs, reporting every missing one in a single error."""
        problems = []
        for needed, get in ((need_recognizer, lambda: self.recognizer), (need_translator, lambda: self.translator)):
            if not needed:
                continue
            try:
                model = get()
                if hasattr(model, "load"):
                    model.load()
            except ModelUnavailableError as error:
                problems.append(str(error))
        if len(problems) == 1:
            raise ModelUnavailableError(problems[0])
        if problems:
            raise ModelUnavailableError("Models needed for this translation are missing:\n"
                                        + "\n".join(f"  - {p}" for p in problems))

    def _needs_translator(self, source: str | None, target: str) -> bool:
        """Whether text MT is needed for source → target (source None: not known yet)."""
        if source == target:
            return False
        return target != "en" or self.english_via == "text"

    # Translation -------------------------------------------------------------------------------
    def translate(
        self,
        audio: Any,
        target: str,
        *,
        transcript: str | None = None,
        translation: str | None = None,
        source_language: str | None = None,
        sample_rate: int | None = None,
        seed: int | None = None,
        progress: ProgressCallback | None = None,
        **synthesis_options: Any,
    ) -> SpeechTranslation:
        """Speak ``audio``'s words in ``target`` ("en", "zh" or "ja") in the same voice.

        Args:
            audio: the source speech: a file path, a Gradio ``(sample_rate, array)`` tuple, or an array with
                ``sample_rate`` (see :func:`vallex.audio.load_audio`); at most 5 minutes.
            transcript: what is said in ``audio`` (skips speech recognition; then ``audio`` is one voice
                prompt and must be at most 15 s).
            translation: the text to speak (skips translation). With ``transcript`` too, no ASR/MT model is
                needed at all.
            source_language: the spoken language; default: Whisper's detection (or the transcript's).
            seed: sampling seed for VALL-E X (chunk i uses ``seed + i``).
            progress: called as ``(stage, done, total)`` with stage "chunk".
            synthesis_options: passed to :meth:`VallEX.synthesize_detailed` (temperature, top_k, ...).

        Raises:
            ValueError: silent/empty audio, an unsupported language, no recognised speech, a translation in
                the wrong script.
            ModelUnavailableError: a needed ASR/MT model is missing (one message listing each).
        """
        target = _language_code(target, "target")
        for key in ("language", "accent", "long_text"):
            if key in synthesis_options:
                raise ValueError(f"{key!r} is set by speech translation itself (target language {target!r}).")
        source = _check_source_language(source_language)
        transcript = _optional_text(transcript, "transcript")
        translation = _optional_text(translation, "translation")
        if translation is not None:
            _check_script(translation, target, "The translation")
        report = progress or (lambda stage, done, total: None)

        wav = load_audio(audio, sample_rate, max_seconds=MAX_SOURCE_SECONDS)  # float32 [N] at 24 kHz
        if transcript is not None:
            return self._translate_transcribed(wav, target, transcript, translation, source, seed, report,
                                               synthesis_options)
        return self._translate_recognized(wav, target, translation, source, seed, report, synthesis_options)

    def _translate_transcribed(self, wav: np.ndarray, target: str, transcript: str, translation: str | None,
                               source: str | None, seed: int | None, report: ProgressCallback,
                               options: dict[str, Any]) -> SpeechTranslation:
        """The caller gave the transcript: the whole recording is the prompt, and ASR is needed only for
        Whisper's English translation."""
        from vallex.text import detect_language

        seconds = len(wav) / SAMPLE_RATE
        if seconds > PROMPT_MAX_SECONDS:
            raise ValueError(
                f"The recording is {seconds:.1f} s long; with a transcript it is used whole as the voice prompt, "
                f"which may be at most {PROMPT_MAX_SECONDS:g} s. Cut it, or leave out the transcript so that "
                "speech recognition cuts it into chunks."
            )
        source = source or detect_language(transcript)
        _check_script(transcript, source, "The transcript")
        sources = {"transcript": "user"}
        if translation is None:
            whisper_route = self._whisper_translates(source, target)
            self._load(need_recognizer=whisper_route, need_translator=self._needs_translator(source, target))
            translation, sources["translation"] = self._translate_text(wav, transcript, source, target)
        else:
            sources["translation"] = "user"
        report("chunk", 0, 1)
        chunk = self._speak(wav, 0, len(wav), transcript, translation, source, target, seed, options)
        report("chunk", 1, 1)
        return SpeechTranslation(chunk.synthesis.waveform, SAMPLE_RATE, source, target, [chunk], sources)

    def _translate_recognized(self, wav: np.ndarray, target: str, translation: str | None, source: str | None,
                              seed: int | None, report: ProgressCallback,
                              options: dict[str, Any]) -> SpeechTranslation:
        """Whisper transcribes each chunk; each chunk is translated and spoken with its own audio as prompt.

        With a caller's translation, only the first chunk with speech is used, as the voice prompt for it.
        """
        # Text MT is loaded up front when it may be needed (always for zh/ja targets), so that a missing
        # ASR model and a missing MT model are named in one message rather than one run after another.
        self._load(need_recognizer=True,
                   need_translator=translation is None and self._needs_translator(source, target))
        spans = split_speech(wav, SAMPLE_RATE, max_seconds=MAX_CHUNK_SECONDS)
        if not spans:
            raise ValueError("The recording is silent: record or upload speech to translate.")
        chunks: list[TranslatedChunk] = []
        sources = {"transcript": "whisper"}
        for index, (start, end) in enumerate(spans):
            report("chunk", index, len(spans))
            piece = wav[start:end]
            heard = self.recognizer.recognize(resample(piece, SAMPLE_RATE, ASR_SAMPLE_RATE), language=source,
                                              task="transcribe")
            if not heard.text:
                # Nothing said here (a cough, noise): skip it, and leave the language to a chunk with words.
                _LOG.info("No speech recognised in %.1f-%.1f s; skipped.", start / SAMPLE_RATE, end / SAMPLE_RATE)
                continue
            if source is None:
                source = spoken_language(heard.language, "Use a recording in one of these, or, if the detection "
                                         "is wrong, give the source language yourself.")
            if translation is not None:
                chunks.append(self._speak(piece, start, end, heard.text, translation, source, target, seed, options))
                sources["translation"] = "user"
                break
            text, sources["translation"] = self._translate_text(piece, heard.text, source, target)
            chunk_seed = None if seed is None else seed + index
            chunks.append(self._speak(piece, start, end, heard.text, text, source, target, chunk_seed, options))
        report("chunk", len(spans), len(spans))
        if not chunks:
            raise ValueError("Speech recognition heard no words in the recording. Check that it holds clear "
                             "speech, or give the transcript yourself.")
        pause = np.zeros(int(CHUNK_PAUSE_SECONDS * SAMPLE_RATE), dtype=np.float32)
        pieces = [part for chunk in chunks for part in (chunk.synthesis.waveform, pause)][:-1]
        return SpeechTranslation(np.concatenate(pieces), SAMPLE_RATE, source, target, chunks, sources)

    def _whisper_translates(self, source: str, target: str) -> bool:
        return source != target and target == "en" and self.english_via == "whisper"

    def _translate_text(self, wav: np.ndarray, transcript: str, source: str, target: str) -> tuple[str, str]:
        """(translation of ``transcript``/``wav`` into ``target``, where it came from)."""
        if source == target:
            return transcript, "same language"
        if self._whisper_translates(source, target):
            result = self.recognizer.recognize(resample(wav, SAMPLE_RATE, ASR_SAMPLE_RATE), language=source,
                                               task="translate")
            text, origin = result.text, f"whisper translate ({getattr(self.recognizer, 'name', 'whisper')})"
        else:
            text = self.translator.translate(transcript, source, target).strip()
            origin = getattr(self.translator, "name", type(self.translator).__name__)
        if not text:
            raise ValueError(f"The translation of {transcript[:60]!r} into {target} came back empty; give the "
                             "translation yourself.")
        _check_script(text, target, "The machine translation")
        return text, str(origin)

    def _speak(self, wav: np.ndarray, start: int, end: int, transcript: str, translation: str, source: str,
               target: str, seed: int | None, options: dict[str, Any]) -> TranslatedChunk:
        """Prompt = the source audio + its transcript; text = the translation, accent = the target language."""
        prompt = self.tts.make_prompt((SAMPLE_RATE, wav), transcript, source)
        synthesis = self.tts.synthesize_detailed(translation, prompt, language=target, accent=target, seed=seed,
                                                 long_text="fixed-prompt", **options)
        return TranslatedChunk(start / SAMPLE_RATE, end / SAMPLE_RATE, transcript, translation, prompt, synthesis)


def translate_speech(audio: Any, target: str, *, tts: VallEX, **options: Any) -> SpeechTranslation:
    """One-off :meth:`SpeechTranslator.translate` with default models (keep a SpeechTranslator to reuse them)."""
    model_options = {k: options.pop(k) for k in ("recognizer", "translator", "english_via") if k in options}
    return SpeechTranslator(tts, **model_options).translate(audio, target, **options)


# Checks ---------------------------------------------------------------------------------------

def _spec_or_object(value: Any, protocol: type) -> tuple[Any, Any]:
    if value is None or isinstance(value, (str, Path)):
        return value, None
    if not isinstance(value, protocol):
        raise ValueError(f"Expected a model name, a folder or a {protocol.__name__}, got {type(value).__name__}.")
    return None, value


def _optional_text(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"The {what} must be text, got {type(value).__name__}.")
    return value.strip() or None


def _language_code(language: Any, what: str) -> str:
    """"en"/"zh"/"ja" for a code or name ("English", "中文", "日本語", ...), else a ValueError."""
    code = LANGUAGE_ALIASES.get(language.strip().lower()) if isinstance(language, str) else None
    if code is None:
        raise ValueError(f"Unknown {what} language {language!r}: expected 'en', 'zh' or 'ja' (the languages "
                         "VALL-E X speaks).")
    return code


def _check_source_language(language: str | None) -> str | None:
    if language is None or (isinstance(language, str) and language.strip().lower() in ("", "auto")):
        return None
    return _language_code(language, "source")


def _check_script(text: str, language: str, what: str) -> None:
    """Refuse text whose script cannot be the language (English without Latin letters, zh/ja without CJK)."""
    has_cjk, has_latin = bool(_CJK.search(text)), bool(_LATIN.search(text))
    if language == "en" and has_cjk and not has_latin:
        raise ValueError(f"{what} {text[:40]!r} is not English (it is written in CJK characters).")
    if language in ("zh", "ja") and not has_cjk:
        raise ValueError(f"{what} {text[:40]!r} has no Chinese/Japanese characters, so it cannot be "
                         f"{LANGUAGE_NAMES[language]}.")


def _join(texts: list[str], language: str) -> str:
    return ("" if language in ("zh", "ja") else " ").join(t for t in texts if t)
