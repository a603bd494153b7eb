"""An OpenAI-compatible HTTP API over a :class:`~vallex.serving.SpeechEngine`.

    from vallex.serving.http import create_api
    app = create_api(engine, voices=lambda: preset_voices(library))   # a FastAPI app; or create_router(...)
    uvicorn.run(app, port=8000)

Routes: ``POST /v1/audio/speech`` (OpenAI's request; the audio streams back by chunked transfer as it is
made), ``GET /v1/voices``, ``GET /v1/models``, ``GET /health``. :func:`create_router` gives the same routes as
an ``APIRouter`` that handles its own errors, so it can be added to any FastAPI app (the Gradio app adds it to
its own); :func:`create_api` wraps it in an app whose 404/405/422 answers have OpenAI's error shape too.

How a request goes: the ``Host`` header is checked (when ``allowed_hosts`` is set), the bearer key (constant
time); without a key the body must be ``application/json`` (so a web page cannot post to the server
cross-site); the body is read (at most ``max_body_bytes``, within ``body_timeout_s``), parsed (NaN, Infinity
and nesting too deep for the parser are invalid JSON) and validated (numbers and flags strictly: ``"2"`` is
not a speed, ``true`` not a seed); the text is checked by the text front end, which also decides whether it
needs the long-text mode (sentence by sentence); the request is submitted (``ServerBusy``: 503 with
``Retry-After``). The response starts only once the engine has produced the first chunk of audio, so every
error the library can find up to then (an unknown voice, a text with nothing to pronounce, a prompt that is
too long, missing weights) is a JSON error with the right status. An error after that (none is expected from
valid input) cannot change the status any more: the connection is closed without the final empty chunk, so the
client sees a truncated response (httpx: ``RemoteProtocolError``), never a silently shortened file. A client
that goes away, before or during the audio, cancels the request in the engine.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from vallex.doctor import last_result_summary
from vallex.inference.scheduler import MAX_SEED, plan_text
from vallex.inference.verification import DEFAULT_VERIFY_ROUNDS, MAX_VERIFY_ROUNDS
from vallex.languages import Languages
from vallex.prompts import NAME_PATTERN, PresetLibrary, VoicePrompt
from vallex.serving.encoding import FORMATS, MEDIA_TYPES, STREAMED_FORMATS, StreamEncoder, encode
from vallex.serving.engine import ModelUnavailable, ServerBusy, SpeechEngine, SpeechRequest, SpeechStream
from vallex.serving.stretch import MAX_SPEED, MIN_SPEED, TimeStretcher

_LOG = logging.getLogger(__name__)

#: Accepted ``model`` values: ours, and OpenAI's speech models (all mean VALL-E X here).
MODELS: tuple[str, ...] = ("vallex", "tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-03-20",
                           "gpt-4o-mini-tts-2025-12-15")
#: OpenAI's built-in voice names: accepted as aliases of the server's default voice.
OPENAI_VOICES: tuple[str, ...] = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage",
                                  "shimmer", "verse", "marin", "cedar")
#: The voice name that asks for no prompt at all (the model's own, random voice).
NO_PROMPT_VOICE = "none"
#: The ``accent`` that follows the text (no accent override); the others are the model's languages.
NO_ACCENT = "none"
#: OpenAI's limit on ``input``; the default of ``max_input_chars``.
DEFAULT_MAX_INPUT_CHARS = 4096
#: Characters of a transcript in ``X-Vallex-Verification`` (a header line must stay well under 8 KB).
MAX_HEADER_TRANSCRIPT = 200
MAX_HEADER_BYTES = 6000
#: Largest request body (a 4096-character input escaped as \\uXXXX is ~25 kB).
DEFAULT_MAX_BODY_BYTES = 64 * 1024
#: Seconds a request body may take to arrive after its headers (a trickling client is cut off: 408).
DEFAULT_BODY_TIMEOUT_S = 30.0
#: Host names of the loopback interface (the ``allowed_hosts`` of a keyless server bound to loopback).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
#: ``Retry-After`` seconds of a 503.
DEFAULT_RETRY_AFTER_S = 2
SAMPLE_RATE = SpeechStream.sample_rate
_KEY_PATTERN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: what fits in a header unchanged


@dataclass(frozen=True)
class VoiceInfo:
    """One voice of ``GET /v1/voices``: its name, language (a language code, None if unknown) and kind."""

    name: str
    language: str | None
    kind: str  # "built-in" | "preset"


def preset_voices(library: PresetLibrary) -> list[VoiceInfo]:
    """The presets of ``library`` (each file is read for its language)."""
    voices = []
    for name in library.names():
        try:
            language: str | None = VoicePrompt.load_npz(library.path_for(name)).language
        except ValueError:  # a damaged file: still listed; using it gives its error
            language = None
        voices.append(VoiceInfo(name, language, "preset"))
    return voices


class APIError(Exception):
    """An error answer in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, param=self.param, code=self.code, kind=self.kind,
                              headers=self.headers)


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   kind: str = "invalid_request_error", headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON error response in OpenAI's shape."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


class _VoiceRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str


class SpeechBody(BaseModel):
    """The body of ``POST /v1/audio/speech``: OpenAI's fields, then ours (see the README for each)."""

    model_config = ConfigDict(extra="forbid")

    model: str = "vallex"
    input: str
    voice: str | _VoiceRef | None = None
    response_format: str = "mp3"
    # Numbers and flags are strict: "2" for a number or true for a seed is a client's mistake, not a value.
    speed: float = Field(1.0, ge=MIN_SPEED, le=MAX_SPEED, strict=True)
    instructions: str | None = Field(None, max_length=DEFAULT_MAX_INPUT_CHARS)
    stream_format: Literal["audio", "sse"] = "audio"
    # Extensions. language and accent: checked against the model's languages (SpeechAPI.plan).
    language: str = Field("auto", max_length=32)
    accent: str | None = Field(NO_ACCENT, max_length=32)
    seed: int | None = Field(None, ge=0, le=MAX_SEED, strict=True)
    temperature: float = Field(1.0, gt=0, le=10, strict=True)
    top_k: int | None = Field(None, ge=1, strict=True)
    top_p: float | None = Field(None, gt=0, le=1, strict=True)
    long_text: Literal["auto", "fixed-prompt", "sliding-window"] = "auto"
    ras: bool = Field(False, strict=True)
    length_guards: bool = Field(False, strict=True)
    best_of: int = Field(1, ge=1, le=16, strict=True)
    verify: Literal["asr"] | None = None
    verify_rounds: int = Field(DEFAULT_VERIFY_ROUNDS, ge=1, le=MAX_VERIFY_ROUNDS, strict=True)
    stream: bool = Field(True, strict=True)


@dataclass(frozen=True)
class _Plan:
    """A validated request: what to submit and how to answer."""

    request: SpeechRequest
    response_format: str
    speed: float
    streamed: bool
    headers: dict[str, str]


class SpeechAPI:
    """The routes' logic, bound to one engine and its settings (see :func:`create_router`)."""

    def __init__(self, engine: SpeechEngine, *, voices: Callable[[], Sequence[VoiceInfo]] | None = None,
                 voice_names: Callable[[], Collection[str]] | None = None, default_voice: str | None = None,
                 api_key: str | None = None, max_input_chars: int = DEFAULT_MAX_INPUT_CHARS,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, model_loaded: Callable[[], bool] | None = None,
                 retry_after_s: int = DEFAULT_RETRY_AFTER_S, allowed_hosts: Collection[str] | None = None,
                 body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
                 languages: Callable[[], Languages] | None = None) -> None:
        if api_key is None:
            api_key = os.environ.get("VALLEX_API_KEY", "").strip()
        if api_key and not _KEY_PATTERN.fullmatch(api_key):
            raise ValueError("The API key must be printable ASCII without spaces.")
        if max_input_chars < 1 or max_body_bytes < 1024:
            raise ValueError(f"max_input_chars must be >= 1 and max_body_bytes >= 1024, got {max_input_chars} "
                             f"and {max_body_bytes}.")
        if default_voice is not None and not NAME_PATTERN.fullmatch(default_voice):
            raise ValueError(f"Invalid default voice {default_voice!r}: use 1-64 letters, digits, '_' or '-'.")
        self.engine = engine
        self._languages = languages or (lambda: self.engine.languages)
        self._voices = voices or (lambda: [])
        self._voice_names = voice_names or (lambda: [voice.name for voice in self._voices()])
        self.default_voice = default_voice
        self._key = api_key.encode("ascii") if api_key else None
        self.max_input_chars, self.max_body_bytes = max_input_chars, max_body_bytes
        if not body_timeout_s > 0:
            raise ValueError(f"body_timeout_s must be > 0, got {body_timeout_s}.")
        self._model_loaded = model_loaded
        self.retry_after_s = retry_after_s
        self.allowed_hosts = frozenset(_host_name(host) for host in allowed_hosts) if allowed_hosts else None
        self.body_timeout_s = body_timeout_s

    @property
    def auth_required(self) -> bool:
        return self._key is not None

    @staticmethod
    def key_required(api_key: str | None) -> bool:
        """Whether ``api_key`` (as the ``api_key`` option: None reads ``$VALLEX_API_KEY``) asks for a key."""
        if api_key is None:
            api_key = os.environ.get("VALLEX_API_KEY", "").strip()
        return bool(api_key)

    # Routes ---------------------------------------------------------------------------------------
    async def speech(self, request: Request) -> Response:
        """``POST /v1/audio/speech``: audio for ``input`` (streamed unless flac or ``"stream": false``)."""
        try:
            self.authorize(request)
            self.check_content_type(request)
            body = SpeechBody.model_validate(_parse_json(await _read_body(request, self.max_body_bytes,
                                                                          self.body_timeout_s)))
        except ValidationError as error:
            return _validation_error(error.errors()).response()
        except APIError as error:
            return error.response()
        try:
            plan = await run_in_threadpool(self.plan, body)
            stream = self.submit(plan.request)
        except APIError as error:
            return error.response()
        pump = _Pump(stream, _produce(stream, plan))
        try:
            first = await _first_event(request, pump)
        except BaseException:
            pump.stop()
            raise
        if first is None:  # the client went away while it waited: nobody reads this
            pump.stop()
            return Response(status_code=499)
        kind, value = first
        if kind == "error":
            pump.stop()
            return self.synthesis_error(value).response()
        media_type = MEDIA_TYPES[plan.response_format]
        if not plan.streamed:
            return Response(value, media_type=media_type, headers={**plan.headers, **_result_headers(stream)})
        return StreamingResponse(_body(value, pump, stream.id), media_type=media_type, headers=plan.headers,
                                 background=BackgroundTask(pump.stop))

    async def voices(self, request: Request) -> Response:
        """``GET /v1/voices``: the voices a request may name."""
        try:
            self.authorize(request)
        except APIError as error:
            return error.response()
        voices = await run_in_threadpool(lambda: list(self._voices()))
        return JSONResponse({
            "object": "list",
            "data": [{"object": "voice", "id": v.name, "name": v.name, "language": v.language, "kind": v.kind}
                     for v in voices],
            "default": self.default_voice,
            "aliases": {"default voice": list(OPENAI_VOICES), "no prompt": [NO_PROMPT_VOICE]},
        })

    async def models(self, request: Request) -> Response:
        """``GET /v1/models``: the accepted ``model`` names (all are VALL-E X)."""
        try:
            self.authorize(request)
        except APIError as error:
            return error.response()
        try:
            languages: list[str] | None = list(await run_in_threadpool(self.languages))
        except APIError:  # the model cannot be loaded: the names are still accepted ones
            languages = None
        return JSONResponse({"object": "list", "data": [{"id": name, "object": "model", "created": 0,
                                                         "owned_by": "vallex", "languages": languages}
                                                        for name in MODELS]})

    async def health(self, request: Request) -> Response:
        """``GET /health`` (no key needed): liveness, whether the model is loaded, the engine's counters, and
        ``doctor``: the summary of this machine's last ``vallex doctor`` run (:func:`vallex.doctor.last_result_summary`;
        null when it never ran).

        503 with ``"status": "unhealthy"`` after a device failure (the engine serves nothing any more).
        """
        stats = self.engine.stats
        counters = (asdict(stats) if is_dataclass(stats) else dict(vars(stats)) if stats is not None
                    else {})
        if isinstance(counters.get("started_at"), (int, float)):
            counters["uptime_s"] = round(time.time() - counters["started_at"], 3)
        unhealthy = getattr(self.engine, "unhealthy", None)  # a device failure: the server must be replaced
        return JSONResponse(status_code=503 if unhealthy else 200, content={
            "status": "unhealthy" if unhealthy else "ok",
            **({"error": unhealthy} if unhealthy else {}),
            "model_loaded": (self._model_loaded() if self._model_loaded is not None
                             else getattr(self.engine, "loaded", None)),
            "engine": counters,
            "max_batch": getattr(self.engine, "max_batch", None),
            "max_queue": getattr(self.engine, "max_queue", None),
            "auth_required": self.auth_required,
            "doctor": await run_in_threadpool(last_result_summary),
        })

    # Steps ----------------------------------------------------------------------------------------
    def authorize(self, request: Request) -> None:
        """Raise a 403 APIError for a ``Host`` not in ``allowed_hosts`` (when set), then a 401 one unless the
        request carries ``Authorization: Bearer <the key>`` (when a key is set)."""
        if self.allowed_hosts is not None:
            # A web page that rebinds its own name to 127.0.0.1 still sends that name as Host: refusing
            # names other than the server's own stops it from using a local server without a key.
            given = _host_name(request.headers.get("host", ""))
            if given not in self.allowed_hosts:
                raise APIError(403, f"This server answers requests addressed to {', '.join(sorted(self.allowed_hosts))}"
                               f", not {given or 'no Host header'!r}: use one of those names in the URL (to serve "
                               "other names, set an API key).", code="host_not_allowed")
        if self._key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip().encode("latin-1") if scheme.lower() == "bearer" else b""
        if not hmac.compare_digest(given, self._key):
            message = ("Incorrect API key provided." if given else
                       "Missing API key: send it as 'Authorization: Bearer <key>'.")
            raise APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    def check_content_type(self, request: Request) -> None:
        """Without a key, refuse (415) a body that is not ``application/json``.

        A web page may send any site a "simple" cross-site POST (``text/plain``, a form) without asking; a
        JSON content type makes the browser ask first (CORS preflight), which this server never allows.
        With a key the browser must ask anyway (the ``Authorization`` header), so any content type is read.
        """
        if self._key is None and _media_type(request) != "application/json":
            given = request.headers.get("content-type") or "none"
            raise APIError(415, f"Send the body as JSON with 'Content-Type: application/json' (got {given!r}); "
                           "a server without an API key reads only JSON bodies, so that web pages cannot send "
                           "it requests.", param=None, code="unsupported_media_type")

    def plan(self, body: SpeechBody) -> _Plan:
        """Check the fields the schema cannot, pick the long-text mode, build the SpeechRequest (blocking: G2P)."""
        if body.model not in MODELS:
            raise APIError(400, f"Unknown model {body.model!r}: use one of {', '.join(MODELS)} (all are VALL-E X).",
                           param="model", code="model_not_found")
        text = body.input
        if not text.strip():
            raise APIError(400, "'input' is empty: give the text to speak.", param="input", code="invalid_value")
        if len(text) > self.max_input_chars:
            raise APIError(400, f"'input' is {len(text)} characters long; at most {self.max_input_chars} are "
                           "accepted.", param="input", code="string_above_max_length")
        fmt = body.response_format
        if fmt not in FORMATS:
            why = " (no AAC encoder here)" if fmt == "aac" else ""
            raise APIError(400, f"Unsupported response_format {fmt!r}{why}: use one of {', '.join(FORMATS)}.",
                           param="response_format", code="invalid_value")
        if body.stream_format != "audio":
            raise APIError(400, "stream_format 'sse' is not supported: use 'audio' (raw audio bytes, streamed).",
                           param="stream_format", code="invalid_value")
        voice = self.resolve_voice(body.voice.id if isinstance(body.voice, _VoiceRef) else body.voice)
        languages = self.languages()
        if body.language not in languages.text_choices:
            raise APIError(400, f"Unknown language {body.language!r}: the model speaks {languages}; use one of "
                           f"{', '.join(languages.text_choices)}.", param="language", code="invalid_value")
        accent = None if body.accent in (None, NO_ACCENT) else body.accent
        if accent is not None and accent not in languages:
            raise APIError(400, f"Unknown accent {accent!r}: the model speaks {languages}; use one of them or "
                           f"'{NO_ACCENT}'.", param="accent", code="invalid_value")
        try:  # the text front end runs here, once: the plan carries the tokens to the engine
            text_plan = plan_text(text, body.language, body.long_text, languages)
        except ValueError as error:
            raise APIError(400, str(error), param="input", code="invalid_value") from None
        long_text = text_plan.long_text
        seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
        request = SpeechRequest(text=text_plan, prompt=voice, language=body.language, accent=accent, seed=seed,
                                temperature=body.temperature, top_k=body.top_k, top_p=body.top_p,
                                ras=body.ras, length_guards=body.length_guards, best_of=body.best_of,
                                verify=body.verify, verify_rounds=body.verify_rounds, long_text=long_text)
        # Verification's scores go in the headers, known once every sentence is checked: one whole answer.
        streamed = body.stream and fmt in STREAMED_FORMATS and body.verify is None
        headers = {"X-Vallex-Seed": str(seed), "X-Vallex-Long-Text": long_text or "off",
                   "X-Vallex-Voice": voice or NO_PROMPT_VOICE, "X-Vallex-Sample-Rate": str(SAMPLE_RATE),
                   "Cache-Control": "no-store"}
        if streamed:
            headers["X-Accel-Buffering"] = "no"  # proxies (nginx) must not hold the chunks back
        if body.instructions and body.instructions.strip():
            headers["X-Vallex-Ignored"] = "instructions"
        return _Plan(request, fmt, float(body.speed), streamed, headers)

    def languages(self) -> Languages:
        """The model's languages (the choices of ``language`` and ``accent``); a 503 APIError when the model
        that would tell cannot be loaded."""
        try:
            return self._languages()
        except Exception as error:  # noqa: BLE001 - missing weights and the like: the server's problem, not the request's
            raise self.synthesis_error(ModelUnavailable(str(error))) from None

    def resolve_voice(self, name: str | None) -> str | None:
        """The voice to submit (None: no prompt); an invalid or unknown name is a 400 naming ``voice``."""
        if name is None:
            return self.default_voice
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise APIError(400, f"Invalid voice {name!r}: a voice name is 1-64 letters, digits, '_' or '-'.",
                           param="voice", code="invalid_value")
        names = self._voice_names()
        if name in names:
            return name
        if name == NO_PROMPT_VOICE:
            return None
        if name.lower() in OPENAI_VOICES:
            return self.default_voice
        listed = ", ".join(list(names)[:20]) or "none"
        raise APIError(400, f"Unknown voice {name!r} (available: {listed}; OpenAI's voice names mean the "
                       f"default voice, '{NO_PROMPT_VOICE}' no prompt).", param="voice", code="voice_not_found")

    def submit(self, request: SpeechRequest) -> SpeechStream:
        try:
            return self.engine.submit(request)
        except ModelUnavailable as error:  # e.g. after a device failure: the server must be restarted
            raise self.synthesis_error(error) from None
        except ServerBusy as error:
            raise APIError(503, str(error), code="server_busy", kind="server_error",
                           headers={"Retry-After": str(self.retry_after_s)}) from None
        except ValueError as error:
            raise APIError(400, str(error), param="input", code="invalid_value") from None
        except RuntimeError as error:  # the engine is shutting down
            raise APIError(503, str(error), code="unavailable", kind="server_error",
                           headers={"Retry-After": str(self.retry_after_s)}) from None

    def synthesis_error(self, error: BaseException) -> APIError:
        """The answer for an error the engine raised before the first audio."""
        if isinstance(error, APIError):
            return error
        if isinstance(error, ModelUnavailable):
            return APIError(503, str(error), code="model_unavailable", kind="server_error",
                            headers={"Retry-After": str(self.retry_after_s)})
        if isinstance(error, ServerBusy):
            return APIError(503, str(error), code="server_busy", kind="server_error",
                            headers={"Retry-After": str(self.retry_after_s)})
        if isinstance(error, ValueError):
            message = str(error)
            about_voice = any(word in message.lower() for word in ("prompt", "preset", "voice"))
            return APIError(400, message, param="voice" if about_voice else "input", code="invalid_value")
        _LOG.error("Synthesis failed", exc_info=error)
        return APIError(500, f"Synthesis failed: {type(error).__name__}: {error}", code="synthesis_failed",
                        kind="server_error")


def create_router(engine: SpeechEngine, **options: Any) -> APIRouter:
    """The API's routes over ``engine`` (a SpeechEngine), as a router for any FastAPI app.

    Options (keyword): ``voices`` (a function giving the :class:`VoiceInfo` list of ``GET /v1/voices``),
    ``voice_names`` (a function giving the names a request may use; default: those of ``voices``),
    ``default_voice`` (used when a request names none or one of OpenAI's voices; None: no prompt),
    ``api_key`` (None: ``$VALLEX_API_KEY``; "" or unset: no key), ``max_input_chars`` (4096),
    ``max_body_bytes`` (65536), ``model_loaded`` (a function for ``/health``), ``retry_after_s`` (2),
    ``allowed_hosts`` (None: any ``Host``; else the names requests must be addressed to, e.g.
    :data:`LOOPBACK_HOSTS` for a keyless server on loopback), ``body_timeout_s`` (30), ``languages`` (a function
    giving the model's :class:`vallex.languages.Languages`, the choices of ``language`` and ``accent``; default:
    ``engine.languages``, which loads the model if it is not loaded yet).
    """
    api = SpeechAPI(engine, **options)
    router = APIRouter()
    router.add_api_route("/v1/audio/speech", api.speech, methods=["POST"], summary="Text to speech (OpenAI-style)")
    router.add_api_route("/v1/voices", api.voices, methods=["GET"], summary="The voices")
    router.add_api_route("/v1/models", api.models, methods=["GET"], summary="The accepted model names")
    router.add_api_route("/health", api.health, methods=["GET"], summary="Liveness and engine counters")
    return router


def create_api(engine: SpeechEngine, **options: Any) -> FastAPI:
    """A FastAPI app serving :func:`create_router`'s routes; every error answer has OpenAI's shape."""
    router = create_router(engine, **options)
    # The docs page and its schema describe the API to anyone who asks: with a key they are not served.
    keyed = SpeechAPI.key_required(options.get("api_key"))
    app = FastAPI(title="VALL-E X speech API", version="1", docs_url=None if keyed else "/docs", redoc_url=None,
                  openapi_url=None if keyed else "/openapi.json")
    app.include_router(router)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return error_response(error.status_code, str(error.detail), code="not_found" if error.status_code == 404
                              else None, headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return _validation_error(error.errors()).response()

    return app


# Helpers ----------------------------------------------------------------------------------------------

async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body, refusing (413) one longer than ``limit`` bytes before reading it all, and (408) one
    that has not fully arrived ``timeout_s`` seconds after its headers (a stalled or trickling client)."""
    declared = request.headers.get("content-length", "")
    too_big = APIError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), timeout_s)
    except asyncio.TimeoutError:
        raise APIError(408, f"The request body did not arrive within {timeout_s:g} s: send it all at once.",
                       code="request_timeout", headers={"Connection": "close"}) from None
    return b"".join(chunks)


def is_loopback(host: str) -> bool:
    """True for a listening address on this machine's loopback interface (only local programs can connect)."""
    return _host_name(host) in LOOPBACK_HOSTS


def _media_type(request: Request) -> str:
    """The request's ``Content-Type`` without parameters, lower case ("" when absent)."""
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def _host_name(host_header: str) -> str:
    """The name part of a ``Host`` header: "localhost:8000" → "localhost", "[::1]:80" → "::1"."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _parse_json(data: bytes) -> Any:
    """The body as a JSON object, or a 400 ``invalid_json`` APIError (never another exception)."""
    bad = APIError(400, "The request body is not valid JSON: send a JSON object such as "
                   '{"model": "vallex", "input": "Hello!", "voice": "alloy"}.', code="invalid_json")
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise bad from None
    if not isinstance(value, dict):
        raise APIError(400, "The request body must be a JSON object.", code="invalid_json")
    return value


def _refuse_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (Python's parser accepts them; a number field must not get them)."""
    raise ValueError(f"{name} is not a JSON value")


def _validation_error(errors: Sequence[dict[str, Any]]) -> APIError:
    """A pydantic / FastAPI validation error as one 400 naming the first bad field."""
    if not errors:
        return APIError(400, "Invalid request.", code="invalid_value")
    first = errors[0]
    location = [part for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    param = str(location[0]) if location else None
    kind = first.get("type", "")
    if kind == "missing":
        return APIError(400, f"Missing required parameter: '{param}'.", param=param,
                        code="missing_required_parameter")
    if kind == "extra_forbidden":
        return APIError(400, f"Unrecognized request argument supplied: {param}", param=param,
                        code="unknown_parameter")
    return APIError(400, f"Invalid '{param}': {first.get('msg', 'invalid value')}.", param=param,
                    code="invalid_value")


def _result_headers(stream: SpeechStream) -> dict[str, str]:
    """Headers of a whole answer about its sentences: ``X-Vallex-Verification`` (``verify="asr"``: per sentence
    its rounds, whether it passed, and the chosen candidate's transcript, phoneme error rate and similarity, as
    ASCII JSON; past :data:`MAX_HEADER_BYTES` without the transcripts, then as one object counting them all) and
    ``X-Vallex-Warnings`` (how many sentences have a warning)."""
    headers = {"X-Vallex-Warnings": str(sum(1 for sentence in stream.sentences if sentence.warning))}
    checks = [sentence.verification for sentence in stream.sentences]
    if not any(check is not None for check in checks):
        return headers

    def summary(transcript_chars: int) -> str:
        return json.dumps([None if check is None else {
            "rounds": check.rounds, "candidates": len(check.candidates), "passed": check.passed,
            "recognizer": check.recognizer, "phoneme_error_rate": _rounded(check.best.phoneme_error_rate),
            "similarity": _rounded(check.best.similarity),
            "transcript": None if check.best.transcript is None else check.best.transcript[:transcript_chars],
        } for check in checks], ensure_ascii=True, separators=(",", ":"))

    value = summary(MAX_HEADER_TRANSCRIPT)
    if len(value) > MAX_HEADER_BYTES:  # many sentences: the scores without the transcripts
        value = summary(0)
    if len(value) > MAX_HEADER_BYTES:  # still too many (a client's header limit is ~16 kB): one line for them all
        checked = [check for check in checks if check is not None]
        rates = [check.best.phoneme_error_rate for check in checked if check.best.phoneme_error_rate is not None]
        value = json.dumps({
            "sentences": len(checks), "checked": len(checked), "passed": sum(check.passed for check in checked),
            "rounds": sum(check.rounds for check in checked),
            "worst_phoneme_error_rate": _rounded(max(rates)) if rates else None,
        }, separators=(",", ":"))
    headers["X-Vallex-Verification"] = value
    return headers


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _produce(stream: SpeechStream, plan: _Plan) -> Iterator[bytes]:
    """The response bytes, made from the stream's chunks (blocking; runs on the pump's thread).

    Streamed: one piece per engine chunk (the first carries the header), then the encoder's tail. Otherwise
    one piece, the whole file, at the end.
    """
    stretcher = TimeStretcher(plan.speed, SAMPLE_RATE) if plan.speed != 1.0 else None
    if not plan.streamed:
        pieces = [stretcher.process(chunk) if stretcher else chunk for chunk in stream]
        if stretcher is not None:
            pieces.append(stretcher.flush())
        audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        yield encode(audio, plan.response_format, SAMPLE_RATE)
        return
    encoder = StreamEncoder(plan.response_format, SAMPLE_RATE)
    head = encoder.header()
    for chunk in stream:
        data = encoder.write(stretcher.process(chunk) if stretcher else chunk)
        yield head + data
        head = b""
    tail = encoder.write(stretcher.flush()) if stretcher is not None else b""
    yield head + tail + encoder.close()


class _Pump:
    """Runs the blocking side of one response on its own thread and hands its events to the event loop.

    Events: ``("data", bytes)``, then ``("end", None)`` or ``("error", exception)``. ``stop()`` cancels the
    engine's stream unless it has finished (idempotent).
    """

    def __init__(self, stream: SpeechStream, produce: Iterator[bytes]) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._stream = stream
        self._stopped = threading.Event()
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(produce,), daemon=True,
                                        name=f"vallex-http-{stream.id}")
        self._thread.start()

    def _run(self, produce: Iterator[bytes]) -> None:
        try:
            for data in produce:
                if self._stopped.is_set():
                    return
                self._emit(("data", data))
        except BaseException as error:  # noqa: BLE001 - handed to the response, which decides
            self._finished.set()
            self._emit(("error", error))
        else:
            self._finished.set()
            self._emit(("end", None))

    def _emit(self, event: tuple[str, Any]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the event loop is gone (server shutting down)
            pass

    async def next(self) -> tuple[str, Any]:
        return await self._queue.get()

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if not self._finished.is_set():
            self._stream.cancel()


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _first_event(request: Request, pump: _Pump) -> tuple[str, Any] | None:
    """The pump's first event, or None if the client disconnects first."""
    event = asyncio.ensure_future(pump.next())
    gone = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        done, _ = await asyncio.wait({event, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not event.done():
            event.cancel()
    return event.result() if event in done else None


class MidStreamError(RuntimeError):
    """Synthesis failed after the response had started: the connection is closed without its last chunk."""


async def _body(first: bytes, pump: _Pump, request_id: int) -> AsyncIterator[bytes]:
    """The streamed body: the first piece, then each one as the pump makes it (cancels on disconnect)."""
    try:
        if first:
            yield first
        while True:
            kind, value = await pump.next()
            if kind == "data":
                if value:
                    yield value
            elif kind == "end":
                return
            else:
                _LOG.error("Speech request %s failed after its audio had started; closing the connection "
                           "without the final chunk", request_id, exc_info=value)
                raise MidStreamError(f"Synthesis failed mid-stream: {value}") from value
    finally:
        pump.stop()  # a no-op when the stream finished; otherwise the client left: stop the engine's work
