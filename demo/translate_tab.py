"""The "Speech translation" tab: a recording in en/zh/ja → the same words in another language, same voice.

Built on :class:`vallex.s2st.SpeechTranslator` (one per :class:`~demo.engine.Engine`, around the shared
model). Whisper and the text translator are optional: with the transcript and the translation typed in,
only the VALL-E X weights are needed.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gradio as gr

from demo import examples
from demo.engine import Engine
from demo.handlers import LANGUAGE_NAMES, AudioOut, friendly_errors
from demo.sampling_controls import app_seed, seed_control
from demo.zero_gpu import max_characters, on_zero_gpu, translation_gpu_seconds, zero_gpu
from vallex.audio import to_pcm16
from vallex.languages import LANGUAGES
from vallex.s2st import ModelUnavailableError, SpeechTranslation

TARGET_CHOICES = [("English", "en"), ("中文 (Chinese)", "zh"), ("日本語 (Japanese)", "ja")]
SOURCE_CHOICES = [("Auto-detect", "auto"), *TARGET_CHOICES]

TAB_TEXT = """Speak what someone said in another language **in their own voice**: the recording is both what
is translated and the voice prompt. Steps: Whisper writes down what is said (the *transcript*), a translation
model translates it (Whisper itself for English, NLLB-200 for Chinese and Japanese), and VALL-E X speaks the
translation with the target language's accent.

**Without the speech-recognition and translation models** (offline, or not installed: `pip install
'vallex[s2st]'`) fill in **both** the transcript and the translation: then only VALL-E X is needed, and the
recording (at most 15 s) is used whole as the voice."""

#: Added to a missing-model message: what to do about it in this tab rather than on the command line.
MODELS_HINT = ("In this tab you can do without them: type what is said in the recording (transcript) and the "
               "text to speak (translation), then translate again. (Whoever runs the app can point "
               "VALLEX_ASR_MODEL / VALLEX_MT_MODEL at local model folders.)")
#: How the summary names where a text came from (the library's words otherwise).
_ORIGINS = {"user": "typed in", "whisper": "Whisper", "same language": "same language, not translated"}


def _chunk_progress(progress: gr.Progress) -> Callable[[str, int, int], None]:
    """A ``(stage, done, total)`` callback that moves the progress bar once per chunk of the recording."""

    def report(stage: str, done: int, total: int) -> None:
        if stage == "chunk" and total:
            progress((min(done, total), total), desc=f"Part {min(done + 1, total)} of {total}")

    return report


def describe_translation(result: SpeechTranslation, seed: int, seconds: float) -> str:
    """A short Markdown summary: languages, where each text came from, audio length, time taken, seed."""
    source = LANGUAGE_NAMES.get(result.source_language, result.source_language)
    target = LANGUAGE_NAMES.get(result.target_language, result.target_language)
    origins = {key: _ORIGINS.get(value, value) for key, value in result.sources.items()}
    summary = (f"**{source} → {target}** · **Audio:** {result.duration:.2f} s · **Took:** {seconds:.1f} s · "
               f"**Seed:** {seed}\n\n**Transcript:** {origins.get('transcript', '?')} · "
               f"**Translation:** {origins.get('translation', '?')}")
    if len(result.chunks) > 1:
        summary += f" · **Parts:** {len(result.chunks)} (the recording was cut at pauses)"
    return summary


def make_translate_handler(engine: Engine) -> Callable:
    """The tab's event function, bound to ``engine`` (not yet wrapped for ZeroGPU)."""
    # On ZeroGPU the whole translation is one GPU call, which a longer typed translation would overrun.
    max_chars = min(engine.config.max_text_chars, max_characters()) if on_zero_gpu() else engine.config.max_text_chars

    @friendly_errors
    def translate(source_audio: str | None, target: str, transcript: str, translation: str, source_language: str,
                  seed: float, progress: gr.Progress = gr.Progress()) -> tuple[AudioOut, str, str, str]:
        """Speak the words of `source_audio` in `target` ("en", "zh" or "ja") in the same voice.

        `transcript` (what is said) and `translation` (what to speak) may be empty: Whisper / the translation
        model fill them in. `source_language` is "auto", "en", "zh" or "ja". Returns (audio, transcript,
        translation, summary).
        """
        if not source_audio:
            raise ValueError("No recording: upload or record the speech to translate (English, Chinese or "
                             "Japanese).")
        if target not in LANGUAGES:
            raise ValueError(f"Unknown target language {target!r}: choose 'en', 'zh' or 'ja'.")
        for text, what in ((transcript, "transcript"), (translation, "translation")):
            if text is not None and not isinstance(text, str):
                raise ValueError(f"The {what} must be text.")
            if text and len(text) > max_chars:
                raise ValueError(f"The {what} has {len(text)} characters; at most {max_chars} are accepted.")
        seed = app_seed(seed)
        started = time.perf_counter()
        try:
            result = engine.with_translator(lambda s2st: s2st.translate(
                source_audio, target, transcript=transcript or None, translation=translation or None,
                source_language=source_language or None, seed=seed, progress=_chunk_progress(progress)))
        except ModelUnavailableError as error:
            raise ModelUnavailableError(f"{error}\n\n{MODELS_HINT}") from None
        summary = describe_translation(result, seed, time.perf_counter() - started)
        return (result.sample_rate, to_pcm16(result.waveform)), result.transcript, result.translation, summary

    return translate


def translate_tab(engine: Engine, model_event: dict[str, Any]) -> None:
    """Add the tab to the Blocks being built; its event is ``/translate`` in the shared model queue group."""
    handler = zero_gpu(lambda source_audio, target, transcript, translation, *rest, **named: translation_gpu_seconds(
        transcript, translation))(make_translate_handler(engine))
    with gr.Tab("Speech translation", id="translate"):
        gr.Markdown(TAB_TEXT)
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", elem_id="translate-source",
                                 label="Speech to translate: English, Chinese or Japanese (upload or record)")
                with gr.Row():
                    target = gr.Dropdown(TARGET_CHOICES, value="en", label="Translate into")
                    source = gr.Dropdown(SOURCE_CHOICES, value="auto", label="Spoken language")
                transcript = gr.Textbox(value="", label="Transcript (optional)", elem_id="translate-transcript",
                                        placeholder="What is said in the recording; empty: Whisper listens")
                translation = gr.Textbox(value="", lines=2, label="Translation (optional)",
                                         elem_id="translate-translation",
                                         placeholder="The text to speak; empty: machine translation")
                seed = seed_control()
                button = gr.Button("Translate", variant="primary", elem_id="translate-generate")
            with gr.Column():
                audio_out = gr.Audio(label="Translated speech, in the same voice", type="numpy", format="wav",
                                     interactive=False, elem_id="translate-audio")
                heard = gr.Textbox(label="What was said", interactive=False)
                spoken = gr.Textbox(label="What is spoken", interactive=False)
                summary = gr.Markdown(elem_id="translate-summary")
        rows = examples.translate_examples(engine)
        if rows:
            gr.Examples(rows, inputs=[audio, target, transcript, translation, source],
                        label="Examples (voices made with espeak-ng; texts given, so no extra models needed)",
                        cache_examples=False)
        button.click(handler, [audio, target, transcript, translation, source, seed],
                     [audio_out, heard, spoken, summary], api_name="translate", **model_event)
