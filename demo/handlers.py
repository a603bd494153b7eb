"""What each button does: plain functions of the widget values, built on :mod:`vallex.api` and
:mod:`vallex.serving` (every synthesis goes through the app's speech engine, :meth:`demo.engine.Engine.speak`).

Every handler turns the library's ``ValueError`` (bad input, said in words) into a ``gr.Error`` message, and
any other failure into a short message without a traceback (the traceback goes to the server log).
Audio leaves as ``(24000, int16 array)``: Gradio writes it into its own cache, so no audio temp files of ours.
"""
from __future__ import annotations

import contextvars
import functools
import inspect
import io
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr
import numpy as np
import soundfile as sf

from demo.engine import Engine
from demo.plots import audio_picture
from demo.sampling_controls import app_seed, takes_sampling_controls
from vallex.api import VallEX
from vallex.asr import LANGUAGE_NAMES as SPOKEN_LANGUAGE_NAMES
from vallex.audio import SAMPLE_RATE, load_audio, to_pcm16
from vallex.inference.sampling import NonFiniteLogits
from vallex.inference.sampling_settings import Sampling
from vallex.prompts import VoicePrompt, validate_name
from vallex.serving import ModelUnavailable, ServerBusy, SpeechRequest
from vallex.synthesis.results import Synthesis
from vallex.synthesis.text_plan import LONG_TEXT_MODES
from vallex.weights import ModelIdentity

_LOG = logging.getLogger(__name__)

LANGUAGE_NAMES = {"en": "English", "zh": "Chinese", "ja": "Japanese", "mix": "mixed"}
NO_VOICE = "none"  # the long-text voice choice that means "no prompt: a random voice"
AudioOut = tuple[int, np.ndarray]


def language_name(code: str) -> str:
    """A language's English name ("German" for "de"), or its code when we have no name for it."""
    return LANGUAGE_NAMES.get(code) or SPOKEN_LANGUAGE_NAMES.get(code.split("-")[0]) or code


def friendly_errors(function: Callable) -> Callable:
    """Show a handler's ``ValueError``/``FileNotFoundError`` as ``gr.Error``; hide other tracebacks from the UI."""

    def translate(error: BaseException) -> gr.Error:
        if isinstance(error, gr.Error):
            return error
        if isinstance(error, (ValueError, FileNotFoundError, ServerBusy, ModelUnavailable, NonFiniteLogits)):
            return gr.Error(str(error), print_exception=False)
        _LOG.exception("Request failed")
        return gr.Error(f"Something went wrong ({type(error).__name__}). The details are in the server log; "
                        "please try again or change the input.", print_exception=False)

    if inspect.isgeneratorfunction(function):
        @functools.wraps(function)
        def generator_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from function(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - every failure becomes a message
                raise translate(error) from None
        return generator_wrapper

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - every failure becomes a message
            raise translate(error) from None
    return wrapper


# Input checks shared by the tabs -----------------------------------------------------------------------

def check_text(text: Any, max_chars: int) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError("The text is empty: type the sentence you want to hear.")
    if len(text) > max_chars:
        raise ValueError(f"The text has {len(text)} characters; at most {max_chars} are accepted here. "
                         "Shorten it or split it into several requests.")
    return text


def accent_option(accent: Any) -> str | None:
    return None if accent in (None, "", "none") else str(accent)


def audio_out(wav: np.ndarray) -> AudioOut:
    return SAMPLE_RATE, to_pcm16(wav)


def wav_bytes(wav: np.ndarray) -> bytes:
    """A 16-bit WAV file of float32 samples ``[N]`` at 24 kHz, in memory (one chunk of streamed audio)."""
    buffer = io.BytesIO()
    sf.write(buffer, to_pcm16(wav), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def progress_callback(progress: gr.Progress) -> Callable[[str, int, int], None]:
    """A ``(stage, done, total)`` callback for the library that moves the UI's progress bar (every 8 steps).

    The speech engine calls it from its own thread; ``gr.Progress`` finds its event through context
    variables, so the handler's context is captured here and the calls run in it.
    """
    context = contextvars.copy_context()

    def report(stage: str, done: int, total: int) -> None:
        if stage == "ar_step" and done % 8 == 0 and total:
            context.run(progress, (min(done, total), total), desc="Generating speech tokens")
        elif stage == "sentence" and total > 1:
            context.run(progress, (done, total), desc=f"Sentence {min(done + 1, total)} of {total}")

    return report


def describe(result: Synthesis, seed: int, sampling: Sampling, prompt: VoicePrompt | None,
             extra_timings: dict[str, float], model: ModelIdentity | None = None) -> tuple[str, dict[str, Any]]:
    """A one-paragraph summary (Markdown) and the full details (JSON) of a synthesis; ``model``: the checkpoint
    that made it (the details' ``model``)."""
    # JSON has no infinity (the real-time factor of an empty output): such values become null.
    timings = {k: round(float(v), 3) if math.isfinite(v) else None
               for k, v in {**extra_timings, **result.timings}.items()}
    languages = ", ".join(language_name(code) for code in result.language.split(","))
    details = {
        "language": result.language,
        "sample_rate": result.sample_rate,
        "duration_s": round(result.duration, 3),
        "seed": seed,
        "sentences": [{"text": s.text, "language": s.tokens.language, "phonemes": s.tokens.phonemes,
                       "stop_reason": s.stop_reason, "seconds": round(len(s.waveform) / SAMPLE_RATE, 3),
                       "ras_redraws": s.ras_fired,
                       "verification": s.verification.as_dict() if s.verification is not None else None}
                      for s in result.sentences],
        "sampling": sampling.as_dict(),
        "warnings": result.warnings,
        "prompt": None if prompt is None else {"language": prompt.language, "seconds": round(prompt.seconds, 2),
                                               "transcript": prompt.transcript, "name": prompt.name},
        "timings": timings,
        "model": model.as_dict() if model is not None else None,
    }
    summary = (f"**Detected language:** {languages} · **Audio:** {result.duration:.2f} s · "
               f"**Synthesis:** {result.timings['total_s']:.2f} s (real-time factor {result.timings['rtf']:.2f}) · "
               f"**Seed:** {seed}\n\n**Phonemes:** `{result.phonemes}`")
    if prompt is not None:
        summary += f"\n\n**Voice:** {language_name(prompt.language)} prompt, {prompt.seconds:.1f} s"
    checks = [s.verification for s in result.sentences if s.verification is not None
              and s.verification.best.phoneme_error_rate is not None]
    if checks:
        rates = ", ".join(f"{c.best.phoneme_error_rate:.2f}" for c in checks)
        summary += (f"\n\n**Speech recognition:** {sum(c.passed for c in checks)} of {len(checks)} sentence(s) "
                    f"passed (phoneme error rate {rates}; {sum(len(c.candidates) for c in checks)} candidates)")
    for warning in result.warnings:
        summary += f"\n\n**Warning:** {warning}"
    return summary, details


# The handlers ----------------------------------------------------------------------------------------

def make_handlers(engine: Engine) -> dict[str, Callable]:
    """The event functions of the app, bound to ``engine`` (on ZeroGPU, its synthesis is a series of GPU calls:
    :meth:`demo.engine.Engine.speak`)."""
    max_chars = engine.config.max_text_chars
    live = engine.config.stream_audio

    @friendly_errors
    @takes_sampling_controls()
    def clone(prompt_audio: str | None, transcript: str, text: str, language: str, accent: str, seed: int,
              sampling: Sampling, progress: gr.Progress = gr.Progress()) -> tuple[AudioOut, str, dict, Any]:
        """Speak `text` in the voice of `prompt_audio` (3-10 s; `transcript` says what it says)."""
        if not prompt_audio:
            raise ValueError("No voice prompt: upload or record 3-10 seconds of someone speaking.")
        check_text(text, max_chars)
        started = time.perf_counter()
        # The recording for the picture is read there too: resampling it is torch work (vallex.inference.threads).
        prompt, prompt_wav = engine.with_model(
            lambda tts: (tts.make_prompt(prompt_audio, transcript or None), load_audio(prompt_audio)))
        prompt_s = time.perf_counter() - started
        request = SpeechRequest(text, prompt, language=language, accent=accent_option(accent), seed=seed,
                                chunk_seconds=None, sampling=sampling)
        result = engine.speak(request, progress_callback(progress)).result()
        summary, details = describe(result, seed, sampling, prompt, {"prompt_s": prompt_s}, engine.model_identity())
        picture = audio_picture(result.waveform, SAMPLE_RATE, prompt_wav)
        return audio_out(result.waveform), summary, details, picture

    def resolve_voice(voice: str | None, prompt_file: str | None, required: bool) -> VoicePrompt | None:
        if prompt_file:  # an uploaded prompt file wins over the dropdown, as in the reference UI
            return VoicePrompt.load_npz(prompt_file)
        if voice in (None, "", NO_VOICE):
            if required:
                raise ValueError("No voice chosen: pick a voice preset or upload a prompt .npz file.")
            return None
        return engine.tts().resolve_prompt(str(voice))  # the model's voice library (demo.engine.AppVoices)

    @friendly_errors
    @takes_sampling_controls()
    def preset(text: str, voice: str, prompt_file: str | None, language: str, accent: str, seed: int,
               sampling: Sampling, progress: gr.Progress = gr.Progress()) -> tuple[AudioOut, str, dict, Any]:
        """Speak `text` in a named voice (`voice`) or the voice of an uploaded `.npz` prompt file."""
        if voice not in (None, "", NO_VOICE):
            validate_name(voice)  # before anything else: a bad name never reaches the file system
        check_text(text, max_chars)

        def prompt_and_audio(tts: VallEX) -> tuple[VoicePrompt | None, Any]:
            prompt = resolve_voice(voice, prompt_file, required=True)
            return prompt, tts.codec.decode_codes(prompt.codes).reshape(-1) if prompt is not None else None

        prompt, prompt_wav = engine.with_model(prompt_and_audio)
        request = SpeechRequest(text, prompt, language=language, accent=accent_option(accent), seed=seed,
                                chunk_seconds=None, sampling=sampling)
        result = engine.speak(request, progress_callback(progress)).result()
        summary, details = describe(result, seed, sampling, prompt, {}, engine.model_identity())
        return audio_out(result.waveform), summary, details, audio_picture(result.waveform, SAMPLE_RATE, prompt_wav)

    @friendly_errors
    def make_prompt(prompt_audio: str | None, transcript: str, language: str, name: str) -> tuple[str, str]:
        """Turn 3-10 s of speech and its transcript into a downloadable `<name>.npz` voice prompt."""
        if not prompt_audio:
            raise ValueError("No audio: upload or record 3-10 seconds of someone speaking.")
        name = validate_name((name or "").strip())
        language = None if language in (None, "", "auto") else language
        prompt = engine.with_model(lambda tts: tts.make_prompt(prompt_audio, transcript or None, language, name=name))
        with engine.scratch_dir() as folder:
            path = prompt.save_npz(folder / f"{name}.npz")
        message = (f"**{name}.npz** is ready: {language_name(prompt.language)} voice, {prompt.seconds:.1f} s, "
                   f"{len(prompt.text_ids)} text tokens.\n\n**Transcript:** {prompt.transcript}\n\n"
                   "Use it in the *Presets* or *Long text* tab (upload the file), or with "
                   "`vallex synthesize --prompt-npz`.")
        return str(path), message

    @friendly_errors
    def long_text(text: str, voice: str, prompt_file: str | None, mode: str, language: str, accent: str,
                  seed: float, progress: gr.Progress = gr.Progress()) -> Iterator[tuple[Any, Any, str]]:
        """Speak a long `text` sentence by sentence: yields (live chunk, whole audio, status) as audio is made.

        With streaming on, "live" gets each chunk's WAV as soon as it is made (0.4 s first, then longer ones,
        several per sentence: `synthesize_stream`'s default) and the whole audio comes at the end; otherwise
        "live" is skipped and the whole audio grows after every sentence.
        """
        if voice not in (None, "", NO_VOICE):
            validate_name(voice)
        check_text(text, max_chars)
        if mode not in LONG_TEXT_MODES:
            raise ValueError(f"Unknown long-text mode {mode!r}: choose {' or '.join(LONG_TEXT_MODES)}.")
        seed = app_seed(seed)
        started = time.perf_counter()
        chunks: list[np.ndarray] = []
        prompt = engine.with_model(lambda tts: resolve_voice(voice, prompt_file, required=False))
        # Live: small chunks, so playback starts after the first words. Otherwise the whole audio is
        # re-sent after every chunk, so one chunk per sentence.
        chunking = {} if live else {"chunk_seconds": None}
        request = SpeechRequest(text, prompt, language=language, accent=accent_option(accent), long_text=mode,
                                seed=seed, **chunking)
        # A client that goes away closes this generator, which cancels the request (the with block).
        sentences = 0
        with engine.speak(request, progress_callback(progress)) as stream:
            for piece in stream.pieces():  # each chunk says which sentence (of how many) it belongs to
                chunks.append(piece.audio)
                sentences = piece.sentences
                seconds = sum(len(c) for c in chunks) / SAMPLE_RATE
                state = "playing" if live else "done"
                status = (f"**Sentence {piece.sentence + 1} of {piece.sentences}** {state} · {seconds:.1f} s of "
                          f"audio in {time.perf_counter() - started:.1f} s · mode {mode} · seed {seed}")
                if live:
                    yield wav_bytes(piece.audio), gr.skip(), status
                else:
                    yield gr.skip(), audio_out(np.concatenate(chunks)), status
        whole = np.concatenate(chunks)
        yield gr.skip(), audio_out(whole), (f"**Done:** {sentences} sentences, {len(whole) / SAMPLE_RATE:.1f} s "
                                            f"of audio in {time.perf_counter() - started:.1f} s · mode {mode} · "
                                            f"seed {seed}")

    def voices() -> list[str]:
        """The voice names usable in the Presets and Long text tabs (built-in examples, then presets)."""
        return engine.voice_names()

    return {"clone": clone, "preset": preset, "make_prompt": make_prompt, "long_text": long_text, "voices": voices}
