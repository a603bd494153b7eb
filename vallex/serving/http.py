"""An OpenAI-compatible HTTP API over a :class:`~vallex.serving.SpeechEngine`: the transport.

    from vallex.serving.http import create_api
    app = create_api(engine, voices=lambda: preset_voices(library))   # a FastAPI app; or create_router(...)
    uvicorn.run(app, port=8000)

Routes: ``POST /v1/audio/speech`` (OpenAI's request; the audio streams back by chunked transfer as it is
made), ``GET /v1/voices``, ``GET /v1/models``, ``GET /health``. :func:`create_router` gives the same routes as
an ``APIRouter`` that handles its own errors, so it can be added to any FastAPI app (the Gradio app adds it to
its own); :func:`create_api` wraps it in an app whose 404/405/422 answers have OpenAI's error shape too.

This module is the HTTP side: the routes, reading bodies within their limits, the guards (``Host``, content
type, key) and the pump that streams the engine's audio out. What a request means and how each error is
answered (the schema, the voices, OpenAI's error shape and the mapping from the library's errors to statuses)
is :mod:`vallex.serving.openai_schema`; the names this module had before they moved there (``APIError``,
``SpeechBody``, ``VoiceInfo``, ``preset_voices``, the constants) are importable from here too.

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

A streamed response holds little audio: the engine keeps at most its ``stream_buffer`` chunks for it and pauses
the request while they wait, the pump at most :data:`PUMP_BUFFER` encoded pieces. A client that takes no data
for ``write_timeout_s`` seconds is dropped: its request is cancelled and the connection closed.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from vallex.config import DEFAULT_STREAM_TIMEOUT_S
from vallex.doctor import last_result_summary
from vallex.languages import Languages
from vallex.prompts import NAME_PATTERN
from vallex.serving import openai_schema
from vallex.serving.encoding import MEDIA_TYPES, StreamEncoder, encode
from vallex.serving.engine import ModelUnavailable, SpeechEngine, SpeechRequest, SpeechStream
from vallex.serving.openai_schema import (
    DEFAULT_MAX_INPUT_CHARS,
    MAX_HEADER_BYTES,
    MAX_HEADER_TRANSCRIPT,
    MODELS,
    NO_ACCENT,
    NO_PROMPT_VOICE,
    OPENAI_VOICES,
    SAMPLE_RATE,
    APIError,
    SpeechBody,
    SpeechPlan,
    VoiceInfo,
    error_response,
    model_list,
    plan_speech,
    preset_voices,
    result_headers,
    submit_error,
    validation_error,
    voice_list,
)
from vallex.serving.stretch import TimeStretcher

if TYPE_CHECKING:
    from vallex.weights.identity import ModelIdentity

__all__ = [
    # The transport (this module).
    "DEFAULT_BODY_TIMEOUT_S", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_RETRY_AFTER_S", "LOOPBACK_HOSTS", "HostGuard",
    "MidStreamError", "PUMP_BUFFER", "SpeechAPI", "check_host", "create_api", "create_router", "is_loopback",
    "loopback_only_hosts",
    # The schema (vallex.serving.openai_schema), importable from here as before the split.
    "DEFAULT_MAX_INPUT_CHARS", "MAX_HEADER_BYTES", "MAX_HEADER_TRANSCRIPT", "MODELS",
    "NO_ACCENT", "NO_PROMPT_VOICE", "OPENAI_VOICES", "SAMPLE_RATE", "APIError", "ModelUnavailable", "SpeechBody",
    "VoiceInfo", "error_response", "preset_voices",
]

_LOG = logging.getLogger(__name__)

#: Largest request body (a 4096-character input escaped as \\uXXXX is ~25 kB).
DEFAULT_MAX_BODY_BYTES = 64 * 1024
#: Seconds a request body may take to arrive after its headers (a trickling client is cut off: 408).
DEFAULT_BODY_TIMEOUT_S = 30.0
#: Host names of the loopback interface (the ``allowed_hosts`` of a keyless server bound to loopback).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
#: ``Retry-After`` seconds of a 503.
DEFAULT_RETRY_AFTER_S = 2
#: Encoded pieces a streamed response's pump makes ahead of what the client has taken.
PUMP_BUFFER = 2
_KEY_PATTERN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: what fits in a header unchanged


class SpeechAPI:
    """The routes' logic, bound to one engine and its settings (see :func:`create_router`)."""

    def __init__(self, engine: SpeechEngine, *, voices: Callable[[], Sequence[VoiceInfo]] | None = None,
                 voice_names: Callable[[], Collection[str]] | None = None, default_voice: str | None = None,
                 api_key: str | None = None, max_input_chars: int = DEFAULT_MAX_INPUT_CHARS,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, model_loaded: Callable[[], bool] | None = None,
                 retry_after_s: int = DEFAULT_RETRY_AFTER_S, allowed_hosts: Collection[str] | None = None,
                 body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
                 languages: Callable[[], Languages] | None = None,
                 identity: Callable[[], ModelIdentity | None] | None = None,

                 write_timeout_s: float = DEFAULT_STREAM_TIMEOUT_S) -> None:
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
        self._identity = identity or self._loaded_identity
        self._voices = voices or (lambda: [])
        self._voice_names = voice_names or (lambda: [voice.name for voice in self._voices()])
        self.default_voice = default_voice
        self._key = api_key.encode("ascii") if api_key else None
        self.max_input_chars, self.max_body_bytes = max_input_chars, max_body_bytes
        if not body_timeout_s > 0:
            raise ValueError(f"body_timeout_s must be > 0, got {body_timeout_s}.")
        if not write_timeout_s > 0:
            raise ValueError(f"write_timeout_s must be > 0, got {write_timeout_s}.")
        self.write_timeout_s = write_timeout_s
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
            return validation_error(error.errors()).response()
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
            return Response(value, media_type=media_type, headers={**plan.headers, **result_headers(stream)})
        return _TimedStreamingResponse(_body(value, pump, stream.id), media_type=media_type, headers=plan.headers,
                                       background=BackgroundTask(pump.stop), write_timeout_s=self.write_timeout_s,
                                       on_timeout=pump.stop)

    async def voices(self, request: Request) -> Response:
        """``GET /v1/voices``: the voices a request may name."""
        try:
            self.authorize(request)
        except APIError as error:
            return error.response()
        voices = await run_in_threadpool(lambda: list(self._voices()))
        return JSONResponse(voice_list(voices, self.default_voice))

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
        return JSONResponse(model_list(languages, await run_in_threadpool(self.checkpoint)))

    async def health(self, request: Request) -> Response:
        """``GET /health`` (no key needed): liveness, whether the model is loaded, the engine's counters, and
        ``doctor``: the summary of this machine's last ``vallex doctor`` run (:func:`vallex.doctor.last_result_summary`;
        null when it never ran), and ``checkpoint``: which model this is (:meth:`checkpoint`).

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
            "checkpoint": await run_in_threadpool(self.checkpoint),
        })

    def checkpoint(self) -> dict[str, Any] | None:
        """Which checkpoint answers (:meth:`vallex.weights.identity.ModelIdentity.as_dict`: file name, SHA-256
        prefix, languages, random or not); None while it is not known (not loaded, or its files missing)."""
        try:
            identity = self._identity()
        except (OSError, ValueError) as error:  # a file gone or damaged since it loaded: /health still answers
            _LOG.warning("Which checkpoint is loaded cannot be told: %s", error)
            return None
        return identity.as_dict() if identity is not None else None

    def _loaded_identity(self) -> ModelIdentity | None:
        """The engine's model's identity once it is loaded (asking never loads it)."""
        if not getattr(self.engine, "loaded", False):
            return None
        identify = getattr(self.engine.tts, "identity", None)  # a stand-in model may have none
        return identify() if callable(identify) else None

    # Guards ---------------------------------------------------------------------------------------
    def authorize(self, request: Request) -> None:
        """Raise a 403 APIError for a ``Host`` not in ``allowed_hosts`` (when set), then a 401 one unless the
        request carries ``Authorization: Bearer <the key>`` (when a key is set)."""
        if self.allowed_hosts is not None:
            check_host(request.headers.get("host", ""), self.allowed_hosts)
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

    # The schema's steps (vallex.serving.openai_schema) with this server's settings ----------------
    def plan(self, body: SpeechBody) -> SpeechPlan:
        """What ``body`` asks for (:func:`~vallex.serving.openai_schema.plan_speech`; blocking: G2P)."""
        return plan_speech(body, max_input_chars=self.max_input_chars, resolve_voice=self.resolve_voice,
                           languages=self.languages)

    def languages(self) -> Languages:
        """The model's languages (the choices of ``language`` and ``accent``); a 503 APIError when the model
        that would tell cannot be loaded."""
        try:
            return self._languages()
        except Exception as error:  # noqa: BLE001 - missing weights and the like: the server's problem, not the request's
            raise self.synthesis_error(ModelUnavailable(str(error))) from None

    def resolve_voice(self, name: str | None) -> str | None:
        """The voice to submit (None: no prompt); an invalid or unknown name is a 400 naming ``voice``."""
        return openai_schema.resolve_voice(name, self._voice_names, self.default_voice)

    def submit(self, request: SpeechRequest) -> SpeechStream:
        try:  # the pump reads every chunk: the engine keeps none for result(), and few for the reader
            return self.engine.submit(request, keep_audio=False)
        except (ValueError, RuntimeError) as error:  # ModelUnavailable and ServerBusy are RuntimeErrors
            raise submit_error(error, self.retry_after_s) from None

    def synthesis_error(self, error: BaseException) -> APIError:
        """The answer for an error the engine raised before the first audio."""
        return openai_schema.synthesis_error(error, self.retry_after_s)


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
    ``engine.languages``, which loads the model if it is not loaded yet), ``identity`` (a function giving the
    :class:`vallex.weights.identity.ModelIdentity` that ``/health`` and ``/v1/models`` show, or None; default: the
    engine's model's, once loaded), ``write_timeout_s`` (60: a streamed response whose client takes nothing for
    that long is dropped and its request cancelled).
    """
    api = SpeechAPI(engine, **options)
    router = APIRouter()
    router.add_api_route("/v1/audio/speech", api.speech, methods=["POST"], summary="Text to speech (OpenAI-style)")
    router.add_api_route("/v1/voices", api.voices, methods=["GET"], summary="The voices")
    router.add_api_route("/v1/models", api.models, methods=["GET"], summary="The accepted model names")
    router.add_api_route("/health", api.health, methods=["GET"], summary="Liveness and engine counters")
    return router


def create_api(engine: SpeechEngine, **options: Any) -> FastAPI:
    """A FastAPI app serving :func:`create_router`'s routes; every error answer has OpenAI's shape. With
    ``allowed_hosts``, :class:`HostGuard` refuses other names on every route (``/health`` and ``/docs`` too)."""
    router = create_router(engine, **options)
    # The docs page and its schema describe the API to anyone who asks: with a key they are not served.
    keyed = SpeechAPI.key_required(options.get("api_key"))
    app = FastAPI(title="VALL-E X speech API", version="1", docs_url=None if keyed else "/docs", redoc_url=None,
                  openapi_url=None if keyed else "/openapi.json")
    app.include_router(router)
    if options.get("allowed_hosts"):
        app.add_middleware(HostGuard, allowed_hosts=options["allowed_hosts"])

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return error_response(error.status_code, str(error.detail), code="not_found" if error.status_code == 404
                              else None, headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return validation_error(error.errors()).response()

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
    except ClientDisconnect:  # the client's loss, not the server's: one line, no traceback
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        _LOG.info("%s closed the connection before its request body arrived (%d bytes read).", client, size)
        raise APIError(400, "The connection closed before the request body arrived.", code="client_disconnected",
                       headers={"Connection": "close"}) from None
    except asyncio.TimeoutError:
        raise APIError(408, f"The request body did not arrive within {timeout_s:g} s: send it all at once.",
                       code="request_timeout", headers={"Connection": "close"}) from None
    return b"".join(chunks)


def is_loopback(host: str) -> bool:
    """True for a listening address on this machine's loopback interface (only local programs can connect)."""
    return _host_name(host) in LOOPBACK_HOSTS


def loopback_only_hosts(listen_host: str, api_key: str | None) -> tuple[str, ...] | None:
    """The ``allowed_hosts`` of a server listening on ``listen_host``: :data:`LOOPBACK_HOSTS` when that is a
    loopback address and no API key is set (what only this machine may use must not be reachable through a
    DNS-rebinding page), else None: any ``Host`` (a public server, e.g. on ``0.0.0.0`` behind a Space's proxy)."""
    return LOOPBACK_HOSTS if is_loopback(listen_host) and not api_key else None


def check_host(host_header: str, allowed_hosts: Collection[str]) -> None:
    """Raise a 403 ``host_not_allowed`` APIError unless the ``Host`` header names one of ``allowed_hosts``
    (names as :func:`_host_name` gives them: lower case, no port).

    Why: a web page that rebinds its own name to 127.0.0.1 can reach a local server, but its requests still say
    that name in ``Host``; refusing names other than the server's own keeps it out.
    """
    given = _host_name(host_header)
    if given not in allowed_hosts:
        raise APIError(403, f"This server answers requests addressed to {', '.join(sorted(allowed_hosts))}, not "
                       f"{given or 'no Host header'!r}: use one of those names in the URL (to serve other names, "
                       "listen on another address or set an API key).", code="host_not_allowed")


class HostGuard:
    """ASGI middleware that applies :func:`check_host` to every HTTP and WebSocket request of the app it wraps
    (all its routes: a Gradio app's page, uploads, queue and files too); refused HTTP requests get the 403
    JSON error, WebSockets are closed before they open (the server answers 403)."""

    def __init__(self, app: ASGIApp, allowed_hosts: Collection[str]) -> None:
        self.app = app
        self.allowed_hosts = frozenset(_host_name(host) for host in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            try:
                check_host(Headers(scope=scope).get("host", ""), self.allowed_hosts)
            except APIError as error:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                else:
                    await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


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


def _produce(stream: SpeechStream, plan: SpeechPlan) -> Iterator[bytes]:
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

    Events: ``("data", bytes)``, then ``("end", None)`` or ``("error", exception)``; at most :data:`PUMP_BUFFER`
    data events wait to be taken (the thread waits for room, and so stops reading the engine's stream, which
    then pauses its request). ``stop()`` cancels the engine's stream unless it has finished (idempotent).
    """

    def __init__(self, stream: SpeechStream, produce: Iterator[bytes]) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._room = threading.Semaphore(PUMP_BUFFER)  # data events that may wait in _queue
        self._stream = stream
        self._stopped = threading.Event()
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(produce,), daemon=True,
                                        name=f"vallex-http-{stream.id}")
        self._thread.start()

    def _run(self, produce: Iterator[bytes]) -> None:
        try:
            for data in produce:
                self._room.acquire()  # released when the event loop takes a piece, or by stop()
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
        event = await self._queue.get()
        if event[0] == "data":
            self._room.release()
        return event

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._room.release()  # a thread waiting for room sees that it is stopped
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


class _ClientStalled(Exception):
    """The client took no data for the write timeout (raised inside the response, caught around it)."""


class _TimedStreamingResponse(StreamingResponse):
    """A streamed response that gives up on a client that takes no data for ``write_timeout_s`` seconds: it calls
    ``on_timeout`` (the pump's stop, which cancels the request) and ends without the final chunk, so that the
    server closes the connection (a client that stops reading would otherwise hold it, its request and the
    audio made for it for ever)."""

    def __init__(self, *args: Any, write_timeout_s: float, on_timeout: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.write_timeout_s, self.on_timeout = write_timeout_s, on_timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def timed_send(message: Any) -> None:
            try:
                await asyncio.wait_for(send(message), self.write_timeout_s)
            except asyncio.TimeoutError:
                raise _ClientStalled from None

        try:
            await super().__call__(scope, receive, timed_send)
        except _ClientStalled:
            client = scope.get("client") or ("a client", "")
            _LOG.info("%s:%s took no audio for %g s: its request is cancelled and the connection closed.",
                      *client, self.write_timeout_s)
            self.on_timeout()


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
