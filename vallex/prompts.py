"""Voice prompts: a few seconds of someone's voice as EnCodec codes, plus what they said.

VALL-E X continues a prompt: the prompt's codes and the token ids of its transcript are put in front of
the target text, so the generated speech takes the prompt's voice, recording conditions and prosody.

    prompt = make_prompt("me.wav", "Hello there, this is my voice.", codec=codec)  # language detected
    prompt.save_npz("me.npz")                       # the reference .npz format (reads in Plachtaa/VALL-E-X)
    presets = PresetLibrary("~/vallex-presets")
    presets.save("me", prompt); presets.load("me")  # names: ^[A-Za-z0-9_-]{1,64}$

``.npz`` layout (the reference's prompt files): ``audio_tokens`` int64 ``[1, T, 8]``, ``text_tokens`` int64 ``[1, L]``,
``lang_code`` 0-d int32 or int64 with **zh=0, ja=1, en=2** (not the model's en=0, zh=1, ja=2). A prompt in a
language the reference never had (one a model was trained on, e.g. de) has ``lang_code`` -1 and its code in a
fourth array, ``language`` (a 0-d unicode string); such a prompt needs a model that speaks its language.
Files are written deterministically (no timestamps) in the zip layout of the reference presets, and a
loaded file remembers its own layout, so loading and saving a preset gives the same bytes (:mod:`vallex.npz`).
"""
from __future__ import annotations

import io
import logging
import os
import re
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from vallex.asr import ModelUnavailableError, find_recognizer, spoken_language
from vallex.audio.codec_format import CODEBOOK_SIZE, FRAME_RATE, NUM_CODEBOOKS, SAMPLE_RATE
from vallex.audio.loading import PROMPT_MAX_SECONDS, load_prompt_audio
from vallex.config import VallexConfig
from vallex.files import make_folder, write_bytes_atomic
from vallex.languages import (
    LANGUAGE_CODE_PATTERN,
    NPZ_CODE_LANGUAGE,
    NPZ_LANGUAGE_CODE,
    UNSET_CHOICES,
    Languages,
    language_code,
)
from vallex.npz import NpzStyle, style_of, write_npz

_LOG = logging.getLogger(__name__)

#: Rows of the checkpoint's text embedding: valid text ids are below this (the front end uses 0..69).
TEXT_VOCAB_SIZE = VallexConfig.public().text_vocab_size
#: Names of presets and prompts: letters, digits, "_" and "-" only, so a name can never address a path.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Prompt files are small (a 15 s prompt is ~75 kB); anything bigger is refused before parsing.
MAX_NPZ_BYTES = 4 * 1024 * 1024
#: Longest prompt accepted from a file, in frames (the audio limit, 15 s).
MAX_PROMPT_FRAMES = int(PROMPT_MAX_SECONDS * FRAME_RATE)
_NPZ_KEYS = ("audio_tokens", "text_tokens", "lang_code")
#: The optional fourth array: the language code of a prompt whose language has no reference ``lang_code``.
_NPZ_LANGUAGE_KEY = "language"
#: ``lang_code`` of such a prompt (the reference's codes are 0-2).
OTHER_LANGUAGE_CODE = -1


def validate_name(name: Any) -> str:
    """Return ``name`` if it matches ``^[A-Za-z0-9_-]{1,64}$``, else raise a ValueError saying what is allowed."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"Invalid prompt name {name!r}: use 1-64 letters, digits, '_' or '-' (no spaces, dots or slashes)."
        )
    return name


@dataclass(eq=False)
class VoicePrompt:
    """A voice prompt.

    Attributes:
        codes: LongTensor ``[1, T, 8]``, EnCodec codes (0..1023) of the prompt audio, 75 frames/s.
        text_ids: text-token ids of the transcript (no BOS/EOS), as a list of L ints.
        language: the prompt's language: "en", "zh", "ja", or another language code (a model trained on it
            speaks with it; :meth:`vallex.api.VallEX.synthesize` checks).
        transcript: the transcript, when known (not stored in ``.npz`` files).
        name: a preset name, when it has one.
    """

    codes: torch.Tensor
    text_ids: list[int]
    language: str
    transcript: str | None = None
    name: str | None = None
    #: dtype of ``lang_code`` in the file it came from (the reference wrote int32 on Windows, int64 on Linux).
    lang_code_dtype: str = field(default="int64", repr=False)
    #: Memory order of ``audio_tokens`` in the file: the reference saves a transposed tensor, which numpy
    #: writes in Fortran order. Kept so that a loaded preset saves back to identical bytes.
    audio_fortran_order: bool = field(default=True, repr=False)
    #: Zip layout of the file it came from, so that a loaded preset saves back to identical bytes.
    _zip_style: NpzStyle = field(default_factory=NpzStyle, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.codes = _as_codes(self.codes)
        self.text_ids = _as_text_ids(self.text_ids)
        self.language = language_code(self.language)
        if self.name is not None:
            validate_name(self.name)
        if self.lang_code_dtype not in ("int32", "int64"):
            raise ValueError(f"lang_code_dtype must be 'int32' or 'int64', got {self.lang_code_dtype!r}.")

    def __eq__(self, other: object) -> bool:
        """Same codes, text ids, language, transcript and name (file-format details are not compared)."""
        if not isinstance(other, VoicePrompt):
            return NotImplemented
        return (torch.equal(self.codes, other.codes) and self.text_ids == other.text_ids
                and self.language == other.language and self.transcript == other.transcript
                and self.name == other.name)

    __hash__ = None  # mutable

    @property
    def num_frames(self) -> int:
        return int(self.codes.shape[1])

    @property
    def seconds(self) -> float:
        """Duration of the prompt audio."""
        return self.num_frames / FRAME_RATE

    @property
    def text_tensor(self) -> torch.Tensor:
        """LongTensor ``[1, L]`` of the transcript's token ids."""
        return torch.tensor([self.text_ids], dtype=torch.long).reshape(1, -1)

    # .npz ---------------------------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The three arrays of the reference ``.npz`` format (a fourth, ``language``, for a language the reference
        had no ``lang_code`` for)."""
        audio = self.codes.cpu().numpy().astype(np.int64)
        arrays = {
            "audio_tokens": np.asfortranarray(audio) if self.audio_fortran_order else audio,
            "text_tokens": np.asarray([self.text_ids], dtype=np.int64).reshape(1, -1),
            "lang_code": np.array(NPZ_LANGUAGE_CODE.get(self.language, OTHER_LANGUAGE_CODE),
                                  dtype=self.lang_code_dtype),
        }
        if self.language not in NPZ_LANGUAGE_CODE:
            arrays[_NPZ_LANGUAGE_KEY] = np.array(self.language)
        return arrays

    def save_npz(self, path: str | os.PathLike) -> Path:
        """Write the prompt in the reference ``.npz`` format (deterministic bytes; see the module docstring),
        creating a missing folder."""
        # Readers never see a half-written file; a missing folder is created, as save_audio does.
        make_folder(Path(path).parent)
        return write_bytes_atomic(path, write_npz(self.to_arrays(), self._zip_style))

    def to_npz_bytes(self) -> bytes:
        """The ``.npz`` file as bytes (e.g. for a download button)."""
        return write_npz(self.to_arrays(), self._zip_style)

    @classmethod
    def load_npz(cls, path: str | os.PathLike, *, name: str | None = None,
                 max_frames: int | None = MAX_PROMPT_FRAMES) -> VoicePrompt:
        """Read a reference ``.npz`` prompt (``allow_pickle=False``), checking every array.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not an .npz prompt, missing keys, wrong shapes/dtypes, codes or ids out of range,
                unknown ``lang_code``, or longer than ``max_frames`` (default 15 s).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Prompt file not found: {path}")
        size = path.stat().st_size
        if size > MAX_NPZ_BYTES:
            raise ValueError(f"{path.name} is {size // 1024} kB; prompt files are at most "
                             f"{MAX_NPZ_BYTES // 2**20} MiB.")
        return cls.from_npz_bytes(path.read_bytes(), name=name, source=path.name, max_frames=max_frames)

    @classmethod
    def from_npz_bytes(cls, data: bytes, *, name: str | None = None, source: str = "the prompt file",
                       max_frames: int | None = MAX_PROMPT_FRAMES) -> VoicePrompt:
        """:meth:`load_npz` from the file's bytes."""
        if len(data) > MAX_NPZ_BYTES:
            raise ValueError(f"{source} is {len(data) // 1024} kB; prompt files are at most "
                             f"{MAX_NPZ_BYTES // 2**20} MiB.")
        arrays, style = _read_npz_bytes(data, source)
        audio, text, code = arrays["audio_tokens"], arrays["text_tokens"], arrays["lang_code"]
        if not np.issubdtype(audio.dtype, np.integer) or not np.issubdtype(text.dtype, np.integer):
            raise ValueError(f"{source}: audio_tokens and text_tokens must be integer arrays.")
        if audio.ndim != 3 or audio.shape[0] != 1 or audio.shape[2] != NUM_CODEBOOKS:
            raise ValueError(f"{source}: audio_tokens must be shaped [1, T, 8], got {list(audio.shape)}.")
        if text.ndim != 2 or text.shape[0] != 1:
            raise ValueError(f"{source}: text_tokens must be shaped [1, L], got {list(text.shape)}.")
        if audio.shape[1] == 0 or text.shape[1] == 0:
            raise ValueError(f"{source} is an empty prompt (no audio frames or no transcript tokens).")
        if max_frames is not None and audio.shape[1] > max_frames:
            raise ValueError(f"{source}: the prompt is {audio.shape[1] / FRAME_RATE:.1f} s long; at most "
                             f"{max_frames / FRAME_RATE:g} s is accepted.")
        if code.size != 1 or not np.issubdtype(code.dtype, np.integer):
            raise ValueError(f"{source}: lang_code must be one integer (0=zh, 1=ja, 2=en).")
        lang_code = int(code.reshape(-1)[0])
        language = _npz_language(lang_code, arrays.get(_NPZ_LANGUAGE_KEY), source)
        dtype = "int32" if code.dtype == np.int32 else "int64"
        prompt = cls(codes=torch.from_numpy(audio.astype(np.int64)), text_ids=text.reshape(-1).tolist(),
                     language=language, name=name, lang_code_dtype=dtype,
                     audio_fortran_order=bool(audio.flags.f_contiguous and not audio.flags.c_contiguous))
        if audio.dtype == np.int64 and text.dtype == np.int64 and code.shape == ():
            prompt._zip_style = style  # byte-exact round trip only makes sense for reference-typed arrays
        return prompt


# Making prompts -----------------------------------------------------------------------------------

class Transcriber(Protocol):
    """Speech recognition for prompts without a transcript."""

    def transcribe(self, wav: np.ndarray) -> tuple[str, str]:
        """``wav``: float32 ``[N]`` at 24 kHz → (text, ISO 639-1 language code)."""


def make_prompt(
    audio: Any,
    transcript: str | None = None,
    language: str | None = None,
    *,
    codec: Any,
    name: str | None = None,
    transcriber: Transcriber | None = None,
    trim_silence: bool = False,
    sample_rate: int | None = None,
    languages: Languages | None = None,
) -> VoicePrompt:
    """A voice prompt from 1-15 s of speech and its transcript.

    Args:
        audio: a file path, a Gradio ``(sample_rate, array)`` tuple, or an array with ``sample_rate``
            (see :func:`vallex.audio.load_audio`).
        transcript: what is said. None/empty: transcribed with Whisper when it is installed with its weights
            (or ``transcriber``), else a ValueError asks for it.
        language: a language of ``languages`` ("en", "zh", "ja", also "English", "中文", "日本語"; "de" for a
            model trained on German); None or "auto": detected from the transcript among them.
        codec: a :class:`vallex.audio.codec.AudioCodec` (its EnCodec makes the codes).
        name: optional preset name (validated).
        trim_silence: drop leading/trailing silence before encoding.
        languages: the languages of the model the prompt is for (``VallEX.languages``; default the public
            checkpoint's); the transcript is read as that model reads text.

    Returns:
        VoicePrompt with codes ``[1, T, 8]`` (T = ceil(24000·seconds / 320)) and the transcript's token ids.
    """
    from vallex.text import MAX_INPUT_CHARS, tokenize  # the text front end is heavy; import on use

    if name is not None:
        validate_name(name)
    if isinstance(transcript, str) and len(transcript) > MAX_INPUT_CHARS:
        # Checked before the audio is read; the text front end's message is about text to speak, not this.
        raise ValueError(
            f"The prompt's transcript is {len(transcript)} characters long; it should be only what is said in "
            f"the 1-15 s recording (a sentence or two; at most {MAX_INPUT_CHARS} characters). Give the words "
            "spoken in the recording, not the text to synthesise."
        )
    wav = load_prompt_audio(audio, sample_rate, trim_silence=trim_silence)
    detect = language is None or (isinstance(language, str) and language.strip().lower() in UNSET_CHOICES)
    table = languages or Languages.public()
    chosen = None if detect else table.normalize(language)
    if transcript is None or not transcript.strip():
        engine = transcriber or find_transcriber()
        if engine is None:
            raise ValueError(
                "No transcript given and no speech recogniser is available: type what is said in the audio "
                "(or install faster-whisper / openai-whisper with its model weights)."
            )
        transcript, heard = engine.transcribe(wav)
        transcript = (transcript or "").strip()
        if not transcript:
            raise ValueError("Speech recognition heard no words in the audio: type the transcript instead.")
        if chosen is None:
            chosen = spoken_language(heard, "Give the transcript and its language.", table.codes)
        if transcript[-1] not in "?!.,。，？！、":
            transcript += "."  # the reference ends recognised text with punctuation too
    tokens = tokenize(transcript, chosen or "auto", languages=table)
    prompt_language = tokens.language if tokens.language in table else tokens.langs[0]
    codes = codec.encode_audio(wav)
    return VoicePrompt(codes=codes, text_ids=list(tokens.ids), language=prompt_language,
                       transcript=transcript, name=name)


def find_transcriber(model_size: str | None = None, device: str = "auto") -> Transcriber | None:
    """A Whisper transcriber if one can run without downloading anything, else None.

    Tries faster-whisper, then openai-whisper (see :func:`vallex.asr.find_recognizer`), with ``model_size``
    (default ``$VALLEX_ASR_MODEL``, ``$VALLEX_WHISPER_MODEL`` or "medium", as the reference): a size name or a
    local model folder. ``device``: "auto" (CUDA when there is one), "cpu" or "cuda".
    """
    try:
        recognizer = find_recognizer(model_size, device=device, download=False)
    except ModelUnavailableError as error:
        _LOG.info("No speech recogniser for prompts: %s", error.reason)
        return None
    return _RecognizerTranscriber(recognizer)


class _RecognizerTranscriber:
    """A :class:`vallex.asr.WhisperRecognizer` as a :class:`Transcriber` (24 kHz in, language detected)."""

    def __init__(self, recognizer: Any):
        self.recognizer = recognizer

    def transcribe(self, wav: np.ndarray) -> tuple[str, str]:
        heard = self.recognizer.recognize(wav, sample_rate=SAMPLE_RATE)
        return heard.text, heard.language


# Presets ------------------------------------------------------------------------------------------

class VoiceLibrary(Protocol):
    """Named voices (:class:`PresetLibrary`, or an app's own): what :meth:`vallex.api.VallEX.resolve_prompt`
    turns a voice name into a prompt with."""

    def names(self) -> list[str]: ...

    def load(self, name: str) -> VoicePrompt: ...


class PresetLibrary:
    """Named voice prompts stored as ``<directory>/<name>.npz``.

    Names are validated against ``^[A-Za-z0-9_-]{1,64}$`` and the resolved path is checked to lie inside
    the directory, so no name (``../x``, ``/etc/passwd``, a symlink) can read or write elsewhere.
    """

    def __init__(self, directory: str | os.PathLike):
        """Raises ValueError when ``directory`` exists but is not a folder (it may be missing: it is made
        when the first preset is saved)."""
        self.directory = Path(directory).expanduser()
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"The preset folder {self.directory} is a file, not a folder: give a folder "
                             "(a missing one is created when the first preset is saved).")

    @classmethod
    def default(cls) -> PresetLibrary:
        """``$VALLEX_PRESETS_DIR``, else ``$XDG_DATA_HOME/vallex/presets`` (``~/.local/share/vallex/presets``)."""
        if os.environ.get("VALLEX_PRESETS_DIR"):
            return cls(os.environ["VALLEX_PRESETS_DIR"])
        data_home = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
        return cls(data_home / "vallex" / "presets")

    def __repr__(self) -> str:
        return f"PresetLibrary({str(self.directory)!r})"

    def names(self) -> list[str]:
        """Sorted names of the presets present (files whose name is not a valid preset name are ignored)."""
        if not self.directory.is_dir():
            return []
        root = self.directory.resolve()
        return sorted(p.stem for p in self.directory.glob("*.npz")
                      if NAME_PATTERN.fullmatch(p.stem) and p.is_file() and p.resolve().parent == root)

    def __contains__(self, name: object) -> bool:
        try:
            return self.path_for(name).is_file()
        except ValueError:
            return False

    def path_for(self, name: Any) -> Path:
        """The file of preset ``name`` (validated, and checked to stay inside the directory)."""
        validate_name(name)
        root = self.directory.resolve()
        path = (root / f"{name}.npz").resolve()
        if path.parent != root:
            raise ValueError(f"Preset {name!r} resolves outside the preset folder {root}.")
        return path

    def load(self, name: str) -> VoicePrompt:
        path = self.path_for(name)
        if not path.is_file():
            available = ", ".join(self.names()[:20]) or "none"
            raise ValueError(f"Unknown voice preset {name!r} (available: {available}).")
        try:
            return VoicePrompt.load_npz(path, name=name)
        except ValueError as error:  # the file's fault, not the request's: say which preset and what to do
            raise ValueError(f"The voice preset {name!r} is damaged ({error}); make it again (vallex "
                             f"make-prompt --name {name} --overwrite) or delete {path.name}.") from None

    def save(self, name: str, prompt: VoicePrompt, *, overwrite: bool = False) -> Path:
        path = self.path_for(name)
        if path.exists() and not overwrite:
            raise ValueError(f"A preset named {name!r} already exists; choose another name or overwrite it.")
        make_folder(self.directory)
        return prompt.save_npz(path)

    def delete(self, name: str) -> None:
        path = self.path_for(name)
        if not path.is_file():
            raise ValueError(f"Unknown voice preset {name!r}.")
        path.unlink()


# Validation helpers -------------------------------------------------------------------------------

def _as_codes(codes: Any) -> torch.Tensor:
    # numpy's data is on the CPU: said explicitly, so torch's default device (if one is set) is not used.
    tensor = codes if isinstance(codes, torch.Tensor) else torch.as_tensor(np.asarray(codes), device="cpu")
    if tensor.dim() == 2:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 3 or tensor.shape[0] != 1 or tensor.shape[2] != NUM_CODEBOOKS:
        raise ValueError(f"Prompt codes must be shaped [1, T, {NUM_CODEBOOKS}], got {list(tensor.shape)}.")
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError("Prompt codes must be integers.")
    if tensor.numel() and (int(tensor.min()) < 0 or int(tensor.max()) >= CODEBOOK_SIZE):
        raise ValueError(f"Prompt codes must be in 0..{CODEBOOK_SIZE - 1}, "
                         f"got {int(tensor.min())}..{int(tensor.max())}.")
    return tensor.to("cpu", torch.long).contiguous()


def _as_text_ids(ids: Any) -> list[int]:
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    array = np.asarray(ids)
    if array.size == 0:
        return []
    if array.ndim > 2 or (array.ndim == 2 and array.shape[0] != 1):
        raise ValueError(f"Prompt text ids must be a list or shaped [1, L], got shape {list(array.shape)}.")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError("Prompt text ids must be integers.")
    values = [int(v) for v in array.reshape(-1)]
    if min(values) < 0 or max(values) >= TEXT_VOCAB_SIZE:
        raise ValueError(f"Prompt text ids must be in 0..{TEXT_VOCAB_SIZE - 1}, got {min(values)}..{max(values)}.")
    return values


# Reading prompt files ------------------------------------------------------------------------------

def _read_npz_bytes(data: bytes, source: str) -> tuple[dict[str, np.ndarray], NpzStyle]:
    """The three arrays of a prompt file (never unpickling) and its zip layout; ValueErrors name ``source``."""
    if not data:
        raise ValueError(f"{source} is empty (0 bytes), not an .npz prompt file.")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = {info.filename: info for info in archive.infolist()}
    except zipfile.BadZipFile:
        raise ValueError(f"{source} is not an .npz prompt file (not a zip archive).") from None
    missing = [key for key in _NPZ_KEYS if f"{key}.npy" not in infos]
    if missing:
        raise ValueError(f"{source} is not a VALL-E X prompt: missing {', '.join(missing)}.")
    keys = [*_NPZ_KEYS, *([_NPZ_LANGUAGE_KEY] if f"{_NPZ_LANGUAGE_KEY}.npy" in infos else [])]
    if sum(infos[f"{key}.npy"].file_size for key in keys) > 16 * MAX_NPZ_BYTES:
        raise ValueError(f"{source}: the arrays are implausibly large for a prompt.")
    arrays = {}
    try:
        for key in keys:
            with archive.open(infos[f"{key}.npy"]) as member:
                arrays[key] = np.lib.format.read_array(member, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"{source}: could not read the arrays ({error}).") from None
    return arrays, style_of(data, infos[f"{_NPZ_KEYS[0]}.npy"])


def _npz_language(lang_code: int, named: np.ndarray | None, source: str) -> str:
    """A prompt file's language: the reference's ``lang_code``, or (code -1) the code in its ``language`` array."""
    if lang_code == OTHER_LANGUAGE_CODE and named is not None:
        value = named.item() if named.shape == () and named.dtype.kind == "U" else None
        if not isinstance(value, str) or not LANGUAGE_CODE_PATTERN.match(value):
            raise ValueError(f"{source}: the 'language' array must hold one language code such as 'de'.")
        return value
    if lang_code not in NPZ_CODE_LANGUAGE:
        raise ValueError(f"{source}: unknown lang_code {lang_code}; expected 0 (zh), 1 (ja) or 2 (en), or -1 with a "
                         "'language' array.")
    return NPZ_CODE_LANGUAGE[lang_code]


def presets_table(library: PresetLibrary) -> list[dict[str, Any]]:
    """One row per preset: name, language, frames, seconds, text tokens (for listings)."""
    rows = []
    for name in library.names():
        try:
            prompt = library.load(name)
        except ValueError as error:
            rows.append({"name": name, "error": str(error)})
            continue
        rows.append({"name": name, "language": prompt.language, "frames": prompt.num_frames,
                     "seconds": round(prompt.seconds, 2), "text_tokens": len(prompt.text_ids)})
    return rows


__all__: Sequence[str] = (
    "VoicePrompt", "PresetLibrary", "Transcriber", "make_prompt", "find_transcriber", "validate_name",
    "presets_table", "NAME_PATTERN",
)
