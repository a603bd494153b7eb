"""The page: five tabs over :mod:`demo.handlers` (speech translation: :mod:`demo.translate_tab`), and ``main()``
that launches it (``python app.py``)."""
from __future__ import annotations

import logging
import os
import signal
from typing import Any

import gradio as gr

from demo import examples, zero_gpu
from demo.config import AppConfig
from demo.engine import Engine, WeightsStatus
from demo.handlers import NO_VOICE, language_name, make_handlers
from demo.http_api import api_router, host_guard
from demo.sampling_controls import sampling_controls, seed_control
from demo.translate_tab import translate_tab
from demo.zero_gpu import on_zero_gpu
from vallex.api import select_device
from vallex.languages import Languages, language_tag
from vallex.synthesis.text_plan import LONG_TEXT_MODES
from vallex.weights import ModelIdentity

#: How the menus write the public checkpoint's languages (others: their English name and code).
LANGUAGE_LABELS = {"en": "English", "zh": "中文 (Chinese)", "ja": "日本語 (Japanese)"}
MODE_CHOICES = [("Same prompt for every sentence (fixed-prompt)", "fixed-prompt"),
                ("Each sentence continues the last (sliding-window)", "sliding-window")]
assert [value for _, value in MODE_CHOICES] == list(LONG_TEXT_MODES)  # noqa: S101 - a programming error

INTRO = """# VALL-E X: speak in anyone's voice, in {languages}
Give a few seconds of someone speaking, and VALL-E X reads your text in that voice, even in another
language (*cross-lingual*). The **accent** setting keeps a speaker's native accent, or gives them another.
Tips: a clean 3-10 s recording with its exact transcript works best; the same seed gives the same result."""

CSS = """
#weights-banner { border-radius: 8px; padding: 4px 14px; }
#weights-banner.error { background: #fdecea; border: 1px solid #e57373; }
#weights-banner.warning { background: #fff8e1; border: 1px solid #ffb300; }
#weights-banner.info { background: #e8f4fd; border: 1px solid #64b5f6; }
/* Gradio's code blocks keep each line whole and scroll sideways: the reason, one long line, was cut off. */
#weights-banner pre, #weights-banner pre code { white-space: pre-wrap; overflow-wrap: anywhere; }
#weights-banner.ok { background: #f5f7f9; border: 1px solid #cfd8dc; }
"""

BANNER_TITLES = {
    "error": "⚠️ **The model weights are missing or cannot be used, so nothing can be synthesised yet.**",
    "warning": "⚠️ **Random weights: everything you hear is noise, not speech.**",
    "info": "ℹ️ **First start.**",
}


def banner_markdown(status: WeightsStatus, identity: ModelIdentity | None = None) -> str:
    """The banner text: the weights' problem, if any, then which checkpoint runs (when known; "" when neither)."""
    model = f"**Model:** {identity.describe()}" if identity is not None else ""
    if status.level == "ok":
        return model
    body = f"```text\n{status.message}\n```" if status.level == "error" else status.message
    return "\n\n".join(part for part in (BANNER_TITLES[status.level], body, model) if part)


def intro_markdown(languages: Languages) -> str:
    """The page's title and introduction, naming the languages the loaded checkpoint speaks."""
    names = [LANGUAGE_LABELS.get(code, language_name(code)).partition(" (")[0] for code in languages]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return INTRO.format(languages=listed)


def doctor_markdown() -> str:
    """This machine's last ``vallex doctor`` result (the page reads it at every load; a line when there is none)."""
    from vallex.doctor import describe_summary, last_result_summary

    return describe_summary(last_result_summary()).replace("\n", "  \n")


def verify_by_default(config: AppConfig, engine: Engine | None = None, status: WeightsStatus | None = None) -> bool:
    """The speech-recognition check is on by default where the app runs on a GPU (ZeroGPU or CUDA; on a CPU it
    costs several times the synthesis) and a recogniser for every language the model speaks is installed
    (``engine.verifiable()``, which loads them; not asked without an engine, or when ``status``, the weights'
    status the page shows, says the model cannot load)."""
    if not on_zero_gpu():
        try:
            if select_device(config.device).type != "cuda":
                return False
        except ValueError:  # a device that is not here: the model's loading will say so
            return False
    loadable = status is not None and status.level in ("ok", "warning")
    return engine is not None and loadable and engine.verifiable()


def language_choices(languages: Languages, with_mix: bool = False) -> list[tuple[str, str]]:
    """The language menu: auto-detect, every language the model speaks, and (``with_mix``) tagged text."""
    choices = [("Auto-detect", "auto")] + [
        (LANGUAGE_LABELS.get(code) or f"{language_name(code)} ({code})", code) for code in languages]
    if with_mix:
        tags = " / ".join(f"{language_tag(code)}…{language_tag(code)}" for code in languages)
        choices.append((f"Mixed, with {tags} tags", "mix"))
    return choices


def accent_choices(languages: Languages) -> list[tuple[str, str]]:
    """The accent menu: none (follow the text), then every language the model speaks (an accent is its row)."""
    return [("No accent (follow the text)", "none")] + [(f"{language_name(code)} accent", code) for code in languages]


def _language_row(languages: Languages, with_mix: bool) -> tuple[gr.Dropdown, gr.Dropdown]:
    with gr.Row():
        language = gr.Dropdown(language_choices(languages, with_mix), value="auto", label="Language of the text")
        accent = gr.Dropdown(accent_choices(languages), value="none", label="Accent")
    return language, accent


def _result_column(prefix: str) -> list[gr.components.Component]:
    """Output audio, summary, picture and details (element ids start with ``prefix``)."""
    audio = gr.Audio(label="Speech", type="numpy", format="wav", interactive=False, elem_id=f"{prefix}-audio")
    summary = gr.Markdown(label="Summary", elem_id=f"{prefix}-summary")
    picture = gr.Image(label="Waveform and spectrogram", type="pil", format="png", interactive=False)
    with gr.Accordion("Details (per sentence: language, phonemes, stop reason; timings)", open=False):
        details = gr.JSON(label="Details")
    return [audio, summary, details, picture]


def _voice_choices(engine: Engine, allow_none: bool) -> list[tuple[str, str]]:
    return ([("No prompt (a random voice)", NO_VOICE)] if allow_none else []) + [
        (f"{name} · built-in {engine.voices[name].language}" if name in engine.voices else name, name)
        for name in engine.voice_names()]


def _voice_dropdown(engine: Engine, allow_none: bool) -> gr.Dropdown:
    names = engine.voice_names()
    default = names[0] if names else (NO_VOICE if allow_none else None)
    # Custom values are allowed so that API clients can name presets added after the page was built;
    # every name is validated by the handler.
    return gr.Dropdown(_voice_choices(engine, allow_none), value=default, label="Voice", allow_custom_value=True)


def _examples(rows: list[list[str]], inputs: list[gr.components.Component], **kwargs: Any) -> None:
    """gr.Examples, or nothing when the assets folder has no voices."""
    if rows:
        gr.Examples(rows, inputs=inputs, **kwargs)


def build_app(config: AppConfig | None = None, engine: Engine | None = None,
              status: WeightsStatus | None = None) -> gr.Blocks:
    """The Gradio Blocks app (not launched). Model events share one queue slot group, ``"model"``.

    ``status`` (default: checked now) is what the banner says about the model files.
    """
    config = config or AppConfig.from_env()
    engine = engine or Engine(config)
    handlers = make_handlers(engine)
    status = status or engine.weights_status()
    # The library's defaults, but for the check by speech recognition where it runs on a GPU (verify_by_default).
    initial = {"verify": "asr"} if verify_by_default(config, engine, status) else {}
    languages = engine.languages()  # the checkpoint's, read from its files (the model loads later)
    model_event: dict[str, Any] = {"concurrency_id": "model", "concurrency_limit": config.concurrency}

    with gr.Blocks(title=config.title, delete_cache=(600, 3600), analytics_enabled=config.analytics) as app:
        gr.Markdown(intro_markdown(languages))
        banner = banner_markdown(status, engine.model_identity())
        gr.Markdown(banner, visible=bool(banner), elem_id="weights-banner", elem_classes=[status.level])
        with gr.Accordion("Device check (vallex doctor)", open=False):
            doctor = gr.Markdown(doctor_markdown(), elem_id="doctor-result")

        with gr.Tab("Clone a voice", id="clone"):
            with gr.Row():
                with gr.Column():
                    prompt = gr.Audio(sources=["upload", "microphone"], type="filepath", elem_id="clone-prompt",
                                      label="Voice prompt: 3-10 s of speech (upload or record)")
                    transcript = gr.Textbox(value="", label="Transcript of the prompt",
                                            placeholder="What is said in the recording (needed for a good copy)")
                    text = gr.Textbox(lines=3, label="Text to speak", elem_id="clone-text",
                                      value="Welcome back. What can I do for you today?")
                    language, accent = _language_row(languages, with_mix=True)
                    sampling = sampling_controls(initial)
                    button = gr.Button("Generate", variant="primary", elem_id="clone-generate")
                with gr.Column():
                    outputs = _result_column("clone")
            _examples(examples.clone_examples(engine), inputs=[prompt, transcript, text, language, accent],
                      label="Examples (voices made with espeak-ng)", cache_examples=False)
            button.click(handlers["clone"], [prompt, transcript, text, language, accent, *sampling], outputs,
                         api_name="clone", **model_event)

        with gr.Tab("Presets", id="presets"):
            with gr.Row():
                with gr.Column():
                    text_p = gr.Textbox(lines=3, label="Text to speak",
                                        value="A prompt carries the voice, prosody and emotion of a speaker.")
                    with gr.Row():
                        voice_p = _voice_dropdown(engine, allow_none=False)
                        refresh = gr.Button("↻ Refresh voices", size="sm")
                    file_p = gr.File(label="…or upload a prompt .npz (wins over the voice list)", file_types=[".npz"],
                                     type="filepath")
                    language_p, accent_p = _language_row(languages, with_mix=True)
                    sampling_p = sampling_controls(initial)
                    button_p = gr.Button("Generate", variant="primary")
                with gr.Column():
                    outputs_p = _result_column("preset")
            _examples(examples.preset_examples(engine), inputs=[text_p, voice_p, language_p, accent_p],
                      cache_examples=False)
            button_p.click(handlers["preset"], [text_p, voice_p, file_p, language_p, accent_p, *sampling_p],
                           outputs_p, api_name="preset", **model_event)

        with gr.Tab("Make a prompt", id="make-prompt"):
            with gr.Row():
                with gr.Column():
                    audio_m = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                       label="Speech: 3-10 s (upload or record)")
                    transcript_m = gr.Textbox(value="", label="Transcript", placeholder="What is said in the recording")
                    with gr.Row():
                        language_m = gr.Dropdown(language_choices(languages), value="auto",
                                                 label="Language of the speech")
                        name_m = gr.Textbox(value="my_voice", label="Prompt name (letters, digits, _ and -)")
                    button_m = gr.Button("Make prompt", variant="primary")
                with gr.Column():
                    file_m = gr.File(label="Voice prompt (.npz)", interactive=False, elem_id="prompt-file")
                    message_m = gr.Markdown(label="Message")
            _examples(examples.prompt_examples(engine), inputs=[audio_m, transcript_m, language_m, name_m],
                      cache_examples=False)
            button_m.click(handlers["make_prompt"], [audio_m, transcript_m, language_m, name_m],
                           [file_m, message_m], api_name="make_prompt", **model_event)

        with gr.Tab("Long text", id="long-text"):
            gr.Markdown("Long text is spoken sentence by sentence, so you can listen while the rest is being made.")
            with gr.Row():
                with gr.Column():
                    text_l = gr.Textbox(lines=8, label="Text", value=examples.LONG_TEXTS[0][0])
                    with gr.Row():
                        voice_l = _voice_dropdown(engine, allow_none=True)
                        file_l = gr.File(label="…or a prompt .npz", file_types=[".npz"], type="filepath")
                    mode_l = gr.Radio(MODE_CHOICES, value="fixed-prompt", label="Mode")
                    language_l, accent_l = _language_row(languages, with_mix=False)
                    seed_l = seed_control()
                    button_l = gr.Button("Generate", variant="primary")
                with gr.Column():
                    if config.stream_audio:
                        live_l = gr.Audio(label="Live: starts with the first words, while the rest is made",
                                          streaming=True, autoplay=True, interactive=False, elem_id="long-live")
                    else:  # Gradio's streaming output needs ffmpeg; without it the whole audio grows instead
                        live_l = gr.Audio(label="Live", visible=False, interactive=False, elem_id="long-live")
                    status_l = gr.Markdown(label="Status", elem_id="long-status")
                    audio_l = gr.Audio(label="Whole text" if config.stream_audio else
                                       "Speech (grows sentence by sentence)", type="numpy", format="wav",
                                       interactive=False, elem_id="long-audio")
            _examples(examples.long_examples(engine), inputs=[text_l, voice_l, mode_l, language_l],
                      cache_examples=False)
            button_l.click(handlers["long_text"], [text_l, voice_l, file_l, mode_l, language_l, accent_l, seed_l],
                           [live_l, audio_l, status_l], api_name="long_text", show_progress_on=[audio_l],
                           **model_event)

        translate_tab(engine, model_event)

        def refresh_voices() -> tuple[dict, dict]:
            return (gr.update(choices=_voice_choices(engine, False)), gr.update(choices=_voice_choices(engine, True)))

        refresh.click(refresh_voices, None, [voice_p, voice_l], api_visibility="private")
        app.load(doctor_markdown, None, doctor, api_visibility="private")  # a later `vallex doctor` shows on reload
        # A plain list of the voice names, for API clients.
        gr.api(handlers["voices"], api_name="voices")
    return app


def main() -> None:
    """Build and launch the app: host/port from ``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # No calls home unless asked for: Gradio and huggingface_hub read these when they would phone.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    zero_gpu.start()  # on ZeroGPU, `spaces` first, on this thread: the model loads here, under its CUDA emulation
    config = AppConfig.from_env()
    engine = Engine(config)
    status = engine.weights_status()
    if status.level == "error":  # the page shows the same text in its banner; the app still starts
        logging.getLogger(__name__).warning("%s", status.message)
    elif config.preload or on_zero_gpu():  # on ZeroGPU, loading inside a request would eat its GPU time
        try:
            engine.warm_up(translation_models=on_zero_gpu())
        except ValueError as error:  # e.g. a failed download: the requests will say so too
            logging.getLogger(__name__).warning("%s", error)
    app = build_app(config, engine, status)
    app.queue(**queue_options(config))
    routes = http_routes(engine)
    middleware = host_guard(config)  # every route, Gradio's too: a keyless app on loopback answers only its names
    # SIGTERM (a Space or a test stopping us) shuts down like Ctrl-C, so the scratch files are removed.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        app.launch(**launch_options(config), app_kwargs={"routes": routes, "middleware": middleware})
    finally:
        engine.close()


def http_routes(engine: Engine) -> list[Any]:
    """The OpenAI-compatible HTTP API's routes, to go first into Gradio's FastAPI app; none on ZeroGPU.

    Why none there: the API's requests run in the speech engine's worker thread, and ZeroGPU attaches a GPU
    only inside the app's decorated handlers, so they would find no GPU. Gradio's own API (``/clone``,
    ``/preset``, ...) goes through those handlers and works.
    """
    if on_zero_gpu():
        logging.getLogger(__name__).info("ZeroGPU: the OpenAI-compatible HTTP API (/v1/...) is not mounted; "
                                         "use the Gradio API instead.")
        return []
    return list(api_router(engine, engine.speech).routes)


def queue_options(config: AppConfig) -> dict[str, Any]:
    """``Blocks.queue`` arguments: how many requests run at once and how many may wait."""
    return {"default_concurrency_limit": config.concurrency, "max_size": config.max_queue}


def launch_options(config: AppConfig) -> dict[str, Any]:
    """``Blocks.launch`` arguments (host and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT)."""
    return {"max_file_size": f"{config.max_upload_mb}mb", "allowed_paths": [str(config.assets_dir)], "css": CSS,
            "footer_links": ["api", "gradio"]}


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
