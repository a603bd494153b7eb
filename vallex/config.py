"""Model configuration.

One frozen dataclass describes a VALL-E X model. ``VallexConfig.public()`` is the shape of the public
checkpoint (``Plachta/VALL-E-X``); ``VallexConfig.tiny()`` is a small model for tests and tutorials.
"""
from __future__ import annotations

import dataclasses
import json
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vallex.audio.codec_format import CODEBOOK_SIZE, NUM_CODEBOOKS
from vallex.files import read_small_text, write_text_atomic
from vallex.languages import LANGUAGES, check_codes

#: The checkpoint was trained on utterances under 22 s: prompt + generated audio stay within this.
MAX_UTTERANCE_SECONDS = 22.0

#: A server's default limit of :func:`vallex.synthesis.request.request_work` per request
#: (:class:`vallex.serving.SpeechEngine`, ``vallex serve --max-request-work``). Why this number: the longest input
#: the HTTP API takes (4096 characters) in the shortest sentences ("好。" 2048 times) fits without best-of-N, so
#: no plain request is refused; best_of 16 with 8 verify rounds (128 candidates a sentence) fits for 16 sentences.
DEFAULT_MAX_REQUEST_WORK = 2048
#: Seconds a streamed request waits for a reader that takes none of its audio before it is cancelled (the
#: engine's ``read_timeout_s``, the HTTP API's ``write_timeout_s``, ``vallex serve --stream-timeout``): a client
#: that stops reading frees its slot and memory.
DEFAULT_STREAM_TIMEOUT_S = 60.0

#: Reference constructor arguments whose only supported value is the public checkpoint's.
_FIXED_CHOICES: dict[str, Any] = {
    "norm_first": True,  # pre-norm residual blocks
    "add_prenet": False,  # no text/audio prenets (nn.Identity in the reference)
    "prefix_mode": 1,  # NAR prompt = the prompt frames with all 8 codebooks
    "share_embedding": True,  # NAR predictor j tied to NAR audio embedding j+2
    "nar_scale_factor": 1.0,  # NAR width = AR width
    "prepend_bos": True,  # AR audio input starts with BOS (id 1025)
}


#: Largest value of each size field. A configuration comes from files a user may have downloaded (safetensors
#: metadata, a ``.json`` beside the checkpoint), so every size is bounded before anything is built: each bound is
#: far above the public model's (in the comment) and every VALL-E X published, yet finite.
SIZE_BOUNDS: dict[str, int] = {
    "d_model": 16384,  # 1024
    "nhead": 256,  # 16
    "num_layers": 256,  # 12 per decoder
    "num_quantizers": 32,  # 8; EnCodec has at most 32 codebooks (24 kbps)
    "text_vocab_size": 1 << 16,  # 2048
    "audio_vocab_size": 1 << 16,  # 1024
    "num_languages": 1024,  # 3
    "ff_multiplier": 16,  # 4
}
#: Largest :attr:`VallexConfig.weight_count` (4 billion: 16 GB in float32, ten times the public model's 370 M),
#: which bounds the sizes together (each within its bound, d_model 16384 and 256 layers would be 10^12 weights).
MAX_WEIGHTS = 4_000_000_000


@dataclass(frozen=True)
class VallexConfig:
    """Sizes of a VALL-E X model, and which language each language row is. Defaults are the public checkpoint's."""

    d_model: int = 1024
    nhead: int = 16
    num_layers: int = 12
    #: EnCodec codebooks at 6 kbps; the AR predicts codebook 0, the NAR codebooks 1..7.
    num_quantizers: int = NUM_CODEBOOKS
    #: Rows of the text embeddings. Only ids 0..69 are produced by the front end, but the checkpoint has 2048.
    text_vocab_size: int = 2048
    #: EnCodec bins per codebook. Id 1024 is EOS (AR output and input), 1025 is BOS (AR input only).
    audio_vocab_size: int = CODEBOOK_SIZE
    #: Rows of the language embeddings (en=0, zh=1, ja=2); training a new language adds a row.
    num_languages: int = 3
    #: Feed-forward width as a multiple of d_model (4 in every reference model).
    ff_multiplier: int = 4
    #: The language of each language-embedding row, in row order (``vallex.languages.Languages``). None: not
    #: recorded (a 3-row model is the public checkpoint's en, zh, ja; a grown one finds its run's languages.json).
    languages: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name, bound in SIZE_BOUNDS.items():
            value = getattr(self, name)
            # bool is an int in Python: ``"d_model": true`` in a JSON file is a mistake, not the size 1.
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= bound:
                raise ValueError(f"VallexConfig.{name} must be a whole number from 1 to {bound}, got "
                                 f"{reprlib.repr(value)}.")
        if self.d_model % self.nhead:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by nhead ({self.nhead}).")
        if self.num_quantizers < 2:
            raise ValueError("num_quantizers must be at least 2 (one AR codebook plus NAR codebooks).")
        if self.weight_count > MAX_WEIGHTS:
            raise ValueError(f"This configuration ({self.num_layers} layers of width {self.d_model}) implies "
                             f"{self.weight_count / 1e9:.1f} billion weights, more than the {MAX_WEIGHTS / 1e9:g} "
                             f"billion allowed (the public model has {VallexConfig().weight_count / 1e6:.0f} million).")
        if self.languages is None and self.num_languages == len(LANGUAGES):
            object.__setattr__(self, "languages", LANGUAGES)  # every 3-row model has the public rows
        elif self.languages is not None:
            if not isinstance(self.languages, (list, tuple)):
                raise ValueError(f"VallexConfig.languages must be a list of language codes, one per language row, "
                                 f"got {reprlib.repr(self.languages)}.")
            if len(self.languages) != self.num_languages:  # checked first: the list may be a long one
                raise ValueError(f"VallexConfig.languages names {len(self.languages)} languages but the model has "
                                 f"{self.num_languages} language rows (num_languages): give one code per row.")
            codes = check_codes(self.languages, "VallexConfig.languages")  # a JSON list becomes a tuple
            object.__setattr__(self, "languages", codes)

    # Special audio ids ---------------------------------------------------------------------------
    @property
    def eos_id(self) -> int:
        return self.audio_vocab_size

    @property
    def bos_id(self) -> int:
        return self.audio_vocab_size + 1

    @property
    def head_dim(self) -> int:
        return self.d_model // self.nhead

    @property
    def weight_count(self) -> int:
        """The weights of the model's matrices (embeddings, attention, feed-forward, adaptive norms, predictors,
        tied ones once): its parameter count less the biases and norm scales, known without building it."""
        d, f, v = self.d_model, self.ff_multiplier, self.audio_vocab_size
        per_layer = (4 + 2 * f) * d * d  # in_proj (3 d x d), out_proj, linear1 (f d x d), linear2
        decoders = 2 * self.num_layers * per_layer + (2 * self.num_layers + 1) * 2 * d * d  # NAR norms: 2d x d each
        embeddings = (2 * self.text_vocab_size + 2 * self.num_languages + self.num_quantizers - 1) * d
        audio = ((v + 2) + (v + 1) + (v + 1) + (self.num_quantizers - 1) * v + v) * d  # AR in/out, NAR in, untied out
        return decoders + embeddings + audio

    # Named configurations -------------------------------------------------------------------------
    @classmethod
    def public(cls) -> VallexConfig:
        """The public checkpoint: 1024 dims, 16 heads, 12 layers per decoder (370.5 M parameters)."""
        return cls()

    @classmethod
    def tiny(cls) -> VallexConfig:
        """A 2-layer, 64-dim model (about 1.2 M parameters) for tests, tutorials and random weights."""
        return cls(d_model=64, nhead=4, num_layers=2)

    @classmethod
    def named(cls, name: str) -> VallexConfig:
        """``"public"``/``"full"`` or ``"tiny"``."""
        if name in ("public", "full"):
            return cls.public()
        if name == "tiny":
            return cls.tiny()
        raise ValueError(f"Unknown model size {name!r}: expected 'full' (the public checkpoint) or 'tiny'.")

    # (De)serialisation ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VallexConfig:
        """Build from our own fields or from the reference's ``VALLE(...)`` constructor arguments.

        Reference-only arguments (``norm_first``, ``prefix_mode``, ...) are accepted only with the
        value the public checkpoint uses, because the other variants are not implemented. Anything else, a value
        of the wrong type (``true`` for a size) or out of :data:`SIZE_BOUNDS` is a one-line ValueError.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"A model configuration must be a JSON object of model options, got "
                             f"{type(data).__name__} {reprlib.repr(data)}.")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in fields:
                kwargs[key] = value
            elif key in _FIXED_CHOICES:
                expected = _FIXED_CHOICES[key]
                if value != expected or isinstance(value, bool) != isinstance(expected, bool):  # 1 is not True
                    raise ValueError(
                        f"Unsupported model option {key}={reprlib.repr(value)}: only {key}={expected!r} "
                        "(the public checkpoint's choice) is implemented."
                    )
            else:
                raise ValueError(f"Unknown model option {reprlib.repr(key)} in the configuration.")
        return cls(**kwargs)

    @classmethod
    def from_text(cls, text: str | bytes, source: str) -> VallexConfig:
        """Build from JSON text (a config file's, or a checkpoint's metadata); every error is one line naming
        ``source``."""
        try:
            data = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{source} is not valid JSON: {error}") from None
        except RecursionError:  # json recurses once per level of nesting
            raise ValueError(f"{source} is not a model configuration: its JSON is nested too deeply.") from None
        try:
            return cls.from_dict(data)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None

    @classmethod
    def from_json(cls, path: str | Path) -> VallexConfig:
        """Read a config file (a regular UTF-8 file of at most 1 MiB, :func:`vallex.files.read_small_text`)."""
        return cls.from_text(read_small_text(path), str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, path: str | Path) -> None:
        """Write the fields as JSON (atomically: a reader never sees half a file)."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

