"""What the HTTP API's requests and answers mean: OpenAI's speech schema, our extensions, and its errors.

The HTTP transport (:mod:`vallex.serving.http`: routes, reading bodies, the guards, the streaming pump) asks
this module what a request says and how to answer it, and nothing here touches a connection:

* the body of ``POST /v1/audio/speech`` (:class:`SpeechBody`: OpenAI's fields, then ours, numbers and flags
  strict), and what it asks for (:func:`plan_speech`: the checks the schema cannot make, the voice, the
  long-text mode, the :class:`~vallex.serving.SpeechRequest` to submit and the ``X-Vallex-*`` headers);
* the accepted ``model`` names and voice aliases, and the bodies of ``GET /v1/voices`` and ``GET /v1/models``;
* errors in OpenAI's shape (:class:`APIError`, :func:`error_response`), from a validation error
  (:func:`validation_error`) and from the library's errors (:func:`submit_error`, :func:`synthesis_error`: which
  is the client's fault, 400, which the server's, 503 with ``Retry-After``, which a bug, 500);
* the headers of a whole answer about its sentences (:func:`result_headers`: verification, warnings).

Kept apart from the transport so that the API's contract can be read, and changed, in one place.
"""
from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, create_model

from vallex.inference.sampling_settings import SEED, Sampling, Setting
from vallex.languages import Languages
from vallex.prompts import NAME_PATTERN, PresetLibrary, VoicePrompt
from vallex.serving.encoding import FORMATS, STREAMED_FORMATS
from vallex.serving.engine import ModelUnavailable, ServerBusy, SpeechRequest, SpeechStream
from vallex.serving.stretch import MAX_SPEED, MIN_SPEED
from vallex.synthesis.request import RequestTooCostly
from vallex.synthesis.text_plan import plan_text
from vallex.synthesis.verification import MAX_REPORTED_TRANSCRIPT

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
MAX_HEADER_TRANSCRIPT = MAX_REPORTED_TRANSCRIPT
MAX_HEADER_BYTES = 6000
SAMPLE_RATE = SpeechStream.sample_rate


# Voices -----------------------------------------------------------------------------------------------

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


def voice_list(voices: Sequence[VoiceInfo], default_voice: str | None) -> dict[str, Any]:
    """The body of ``GET /v1/voices``: the voices a request may name, the default and the aliases."""
    return {
        "object": "list",
        "data": [{"object": "voice", "id": v.name, "name": v.name, "language": v.language, "kind": v.kind}
                 for v in voices],
        "default": default_voice,
        "aliases": {"default voice": list(OPENAI_VOICES), "no prompt": [NO_PROMPT_VOICE]},
    }


def model_list(languages: list[str] | None, checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body of ``GET /v1/models``: the accepted ``model`` names (all are VALL-E X), each with the model's
    languages (None when the model cannot be loaded to tell) and ``checkpoint``, which one it is (the form of
    :meth:`vallex.weights.identity.ModelIdentity.as_dict`; None when unknown). OpenAI's model object allows such
    extra fields; the ids stay the same whatever the checkpoint."""
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "vallex",
                                        "languages": languages, "checkpoint": checkpoint} for name in MODELS]}


def resolve_voice(name: str | None, voice_names: Callable[[], Collection[str]],
                  default_voice: str | None) -> str | None:
    """The voice to submit for a request's ``voice`` (None: no prompt); an invalid or unknown name is a 400
    naming ``voice``. The name is checked before ``voice_names`` is asked (a bad name reaches no file)."""
    if name is None:
        return default_voice
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise APIError(400, f"Invalid voice {name!r}: a voice name is 1-64 letters, digits, '_' or '-'.",
                       param="voice", code="invalid_value")
    names = voice_names()
    if name in names:
        return name
    if name == NO_PROMPT_VOICE:
        return None
    if name.lower() in OPENAI_VOICES:
        return default_voice
    listed = ", ".join(list(names)[:20]) or "none"
    raise APIError(400, f"Unknown voice {name!r} (available: {listed}; OpenAI's voice names mean the "
                   f"default voice, '{NO_PROMPT_VOICE}' no prompt).", param="voice", code="voice_not_found")


# Errors -----------------------------------------------------------------------------------------------

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


def validation_error(errors: Sequence[dict[str, Any]]) -> APIError:
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


def submit_error(error: ValueError | RuntimeError, retry_after_s: int) -> APIError:
    """The answer when :meth:`SpeechEngine.submit <vallex.serving.SpeechEngine.submit>` refuses a request: the
    model cannot be loaded (503, e.g. after a device failure) or the queue is full (503), the request is invalid
    (400), the engine is shutting down (503)."""
    if isinstance(error, (ModelUnavailable, ServerBusy, RequestTooCostly)):
        return synthesis_error(error, retry_after_s)
    if isinstance(error, ValueError):
        return APIError(400, str(error), param="input", code="invalid_value")
    return APIError(503, str(error), code="unavailable", kind="server_error",  # the engine is shutting down
                    headers={"Retry-After": str(retry_after_s)})


def synthesis_error(error: BaseException, retry_after_s: int) -> APIError:
    """The answer for an error the engine raised before the first audio (503s carry ``Retry-After``)."""
    if isinstance(error, APIError):
        return error
    if isinstance(error, ModelUnavailable):
        return APIError(503, str(error), code="model_unavailable", kind="server_error",
                        headers={"Retry-After": str(retry_after_s)})
    if isinstance(error, ServerBusy):
        return APIError(503, str(error), code="server_busy", kind="server_error",
                        headers={"Retry-After": str(retry_after_s)})
    if isinstance(error, RequestTooCostly):  # the message names the cost, its parts and the server's limit
        return APIError(400, str(error), param=error.param, code="request_too_costly")
    if isinstance(error, ValueError):
        message = str(error)
        about_voice = any(word in message.lower() for word in ("prompt", "preset", "voice"))
        return APIError(400, message, param="voice" if about_voice else "input", code="invalid_value")
    _LOG.error("Synthesis failed", exc_info=error)
    return APIError(500, f"Synthesis failed: {type(error).__name__}: {error}", code="synthesis_failed",
                    kind="server_error")


# The request ------------------------------------------------------------------------------------------

class _VoiceRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str


class _SpeechFields(BaseModel):
    """OpenAI's fields of ``POST /v1/audio/speech``, then those of ours that are not sampling settings."""

    model_config = ConfigDict(extra="forbid")

    model: str = "vallex"
    input: str
    voice: str | _VoiceRef | None = None
    response_format: str = "mp3"
    # Numbers and flags are strict: "2" for a number or true for a seed is a client's mistake, not a value.
    speed: float = Field(1.0, ge=MIN_SPEED, le=MAX_SPEED, strict=True)
    instructions: str | None = Field(None, max_length=DEFAULT_MAX_INPUT_CHARS)
    stream_format: Literal["audio", "sse"] = "audio"
    # Extensions. language and accent: checked against the model's languages (plan_speech).
    language: str = Field("auto", max_length=32)
    accent: str | None = Field(NO_ACCENT, max_length=32)
    long_text: Literal["auto", "fixed-prompt", "sliding-window"] = "auto"
    stream: bool = Field(True, strict=True)


def schema_field(setting: Setting, description: str) -> tuple[Any, Any]:
    """A setting as a strict pydantic field (type, default): its kind, range, choices and default; None allowed
    where the setting is optional (off). The library checks the value again when the request is made."""
    if setting.choices:
        kind: Any = Literal[setting.choices]
    else:
        bounds = {"gt" if setting.low_open else "ge": setting.low, "le": setting.high}
        kind = Annotated[setting.kind, Field(strict=True, **{k: v for k, v in bounds.items() if v is not None})]
    return (kind | None if setting.optional else kind), Field(setting.default, description=description)


def speech_body(sampling: type[Sampling] = Sampling) -> type[BaseModel]:
    """The body of ``POST /v1/audio/speech``: OpenAI's fields, ours, ``seed`` and one field per setting of
    ``sampling`` (its JSON name is the setting's)."""
    fields = {SEED.name: schema_field(SEED, SEED.help)}
    fields.update({setting.name: schema_field(setting, sampling.help_of(setting, lambda other: other.name))
                   for setting in sampling.settings()})
    return create_model("SpeechBody", __base__=_SpeechFields, __module__=__name__,
                        __doc__="The body of ``POST /v1/audio/speech``: OpenAI's fields, then ours (see the README "
                        "for each).", **fields)


#: The body of ``POST /v1/audio/speech`` (:func:`speech_body` of :class:`Sampling`).
SpeechBody = speech_body()


@dataclass(frozen=True)
class SpeechPlan:
    """A validated request: what to submit and how to answer."""

    request: SpeechRequest
    response_format: str
    speed: float
    streamed: bool
    headers: dict[str, str]


def plan_speech(body: SpeechBody, *, max_input_chars: int, resolve_voice: Callable[[str | None], str | None],
                languages: Callable[[], Languages]) -> SpeechPlan:
    """Check the fields the schema cannot, pick the long-text mode, build the SpeechRequest (blocking: G2P).

    ``resolve_voice`` gives the voice for the body's ``voice`` (:func:`resolve_voice` with the server's voices),
    ``languages`` the model's languages (a 503 APIError when it cannot be loaded); both are asked only once the
    cheaper checks have passed. Every refusal is an :class:`APIError` naming the field.
    """
    if body.model not in MODELS:
        raise APIError(400, f"Unknown model {body.model!r}: use one of {', '.join(MODELS)} (all are VALL-E X).",
                       param="model", code="model_not_found")
    text = body.input
    if not text.strip():
        raise APIError(400, "'input' is empty: give the text to speak.", param="input", code="invalid_value")
    if len(text) > max_input_chars:
        raise APIError(400, f"'input' is {len(text)} characters long; at most {max_input_chars} are "
                       "accepted.", param="input", code="string_above_max_length")
    fmt = body.response_format
    if fmt not in FORMATS:
        why = " (no AAC encoder here)" if fmt == "aac" else ""
        raise APIError(400, f"Unsupported response_format {fmt!r}{why}: use one of {', '.join(FORMATS)}.",
                       param="response_format", code="invalid_value")
    if body.stream_format != "audio":
        raise APIError(400, "stream_format 'sse' is not supported: use 'audio' (raw audio bytes, streamed).",
                       param="stream_format", code="invalid_value")
    voice = resolve_voice(body.voice.id if isinstance(body.voice, _VoiceRef) else body.voice)
    spoken = languages()
    if body.language not in spoken.text_choices:
        raise APIError(400, f"Unknown language {body.language!r}: the model speaks {spoken}; use one of "
                       f"{', '.join(spoken.text_choices)}.", param="language", code="invalid_value")
    accent = None if body.accent in (None, NO_ACCENT) else body.accent
    if accent is not None and accent not in spoken:
        raise APIError(400, f"Unknown accent {accent!r}: the model speaks {spoken}; use one of them or "
                       f"'{NO_ACCENT}'.", param="accent", code="invalid_value")
    try:  # the text front end runs here, once: the plan carries the tokens to the engine
        text_plan = plan_text(text, body.language, body.long_text, spoken)
    except ValueError as error:
        raise APIError(400, str(error), param="input", code="invalid_value") from None
    long_text = text_plan.long_text
    seed = body.seed if body.seed is not None else secrets.randbelow(2**31)
    sampling = Sampling(**{name: getattr(body, name) for name in Sampling.names()})
    request = SpeechRequest(text=text_plan, prompt=voice, language=body.language, accent=accent, seed=seed,
                            long_text=long_text, sampling=sampling)
    # Verification's scores go in the headers, known once every sentence is checked: one whole answer.
    streamed = body.stream and fmt in STREAMED_FORMATS and body.verify is None
    headers = {"X-Vallex-Seed": str(seed), "X-Vallex-Long-Text": long_text or "off",
               "X-Vallex-Voice": voice or NO_PROMPT_VOICE, "X-Vallex-Sample-Rate": str(SAMPLE_RATE),
               "Cache-Control": "no-store"}
    if streamed:
        headers["X-Accel-Buffering"] = "no"  # proxies (nginx) must not hold the chunks back
    if body.instructions and body.instructions.strip():
        headers["X-Vallex-Ignored"] = "instructions"
    return SpeechPlan(request, fmt, float(body.speed), streamed, headers)


# The answer -------------------------------------------------------------------------------------------

def result_headers(stream: SpeechStream) -> dict[str, str]:
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
