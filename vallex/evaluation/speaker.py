"""Speaker similarity: cosine between speaker embeddings of two recordings.

Two verifiers:

* :class:`ResemblyzerVerifier` (default, always offline): Resemblyzer's GE2E LSTM speaker encoder, whose
  weights ship in the ``resemblyzer`` wheel. Each waveform is resampled to 16 kHz, raised to -30 dBFS
  (never lowered), and silences longer than ~0.3 s are removed by WebRTC VAD (``preprocess_wav``); the
  utterance embedding is the L2-normalised mean of the embeddings of 1.6 s windows taken 1/1.3 s apart.
  The score is the dot product of the two unit vectors (cosine; in [0, 1] in practice because the
  embeddings pass a ReLU). When VAD keeps less than :data:`MIN_VOICED_SECONDS` of a clip (noise, or the
  output of random weights), the untrimmed clip is embedded instead and the caller is told so.
* :class:`WavLMVerifier` (optional): a ``transformers`` WavLM x-vector model (default
  ``microsoft/wavlm-base-plus-sv``), used only when its weights are already on disk (a folder or the Hugging
  Face cache); cosine of its x-vectors of 16 kHz audio. Papers' "SIM" numbers (Seed-TTS-eval, VALL-E X)
  come from WavLM-large fine-tuned for verification; this is the closest offline-loadable relative, so
  compare its numbers only with each other.

Both load lazily, once per object.
"""
from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vallex.audio.codec_format import SAMPLE_RATE
from vallex.audio.processing import resample

#: Speaker encoders listen at 16 kHz.
VERIFIER_SAMPLE_RATE = 16_000
#: Below this much voiced audio (after VAD) the VAD trim is skipped: too little is left to embed.
MIN_VOICED_SECONDS = 0.5
DEFAULT_WAVLM_MODEL = "microsoft/wavlm-base-plus-sv"
WAVLM_MODEL_ENV = "VALLEX_WAVLM_MODEL"


class VerifierUnavailableError(RuntimeError):
    """The verifier's package or weights are missing; the message says which and what to do."""


class SpeakerVerifier(Protocol):
    name: str

    def embed(self, wav: np.ndarray) -> tuple[np.ndarray, str | None]:
        """Unit-norm embedding [D] of float32 samples [N] at 24 kHz, and a note (or None)."""


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors [D]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    if norm == 0:
        raise ValueError("Cannot compare an all-zero speaker embedding (silent audio?).")
    return float(np.dot(a, b) / norm)


def _check_wav(wav: np.ndarray, what: str) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"{what}: expected mono samples [N] at 24 kHz, got shape {wav.shape}.")
    if wav.size < SAMPLE_RATE // 10:
        raise ValueError(f"{what}: {wav.size / SAMPLE_RATE:.2f} s of audio is too short to compare voices "
                         "(need at least 0.1 s).")
    if not np.all(np.isfinite(wav)):
        raise ValueError(f"{what}: the audio holds NaN or infinite samples.")
    return wav


class ResemblyzerVerifier:
    """Resemblyzer's GE2E speaker encoder (weights bundled with the package, 256-d embeddings)."""

    name = "resemblyzer"

    def __init__(self, device: str = "cpu"):
        self.device = device
        self._encoder: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._encoder is None:
                try:
                    with warnings.catch_warnings():
                        # webrtcvad imports the deprecated pkg_resources (hence setuptools<81 in [eval]).
                        warnings.simplefilter("ignore", category=UserWarning)
                        warnings.simplefilter("ignore", category=DeprecationWarning)
                        from resemblyzer import VoiceEncoder
                except ImportError as error:
                    raise VerifierUnavailableError(
                        f"Speaker similarity needs resemblyzer ({error}). Install the evaluation extra: "
                        "pip install 'vallex[eval]'."
                    ) from None
                # torch >= 2.6 loads the bundled checkpoint with weights_only=True (plain tensors only).
                self._encoder = VoiceEncoder(device=self.device, verbose=False)
            return self._encoder

    def embed(self, wav: np.ndarray) -> tuple[np.ndarray, str | None]:
        """Unit-norm embedding [256] of float32 samples [N] at 24 kHz, and a note when VAD found no speech."""
        encoder = self._load()
        from resemblyzer.audio import normalize_volume, trim_long_silences
        from resemblyzer.hparams import audio_norm_target_dBFS

        wav16 = resample(_check_wav(wav, "speaker similarity"), SAMPLE_RATE, VERIFIER_SAMPLE_RATE)
        # preprocess_wav's steps, split so that the VAD result can be checked.
        wav16 = normalize_volume(wav16.astype(np.float64), audio_norm_target_dBFS, increase_only=True)
        wav16 = np.clip(wav16, -1.0, 1.0).astype(np.float32)  # webrtcvad needs int16-range PCM
        voiced = trim_long_silences(wav16)
        note = None
        if len(voiced) < MIN_VOICED_SECONDS * VERIFIER_SAMPLE_RATE:
            note = "resemblyzer VAD found under 0.5 s of speech; embedded the untrimmed audio"
            voiced = wav16
        return np.asarray(encoder.embed_utterance(voiced), dtype=np.float32), note


class WavLMVerifier:
    """WavLM x-vector speaker verifier through ``transformers`` (only from weights already on disk)."""

    name = "wavlm"

    def __init__(self, model: str | os.PathLike | None = None, device: str = "cpu"):
        self.model_name = str(model or os.environ.get(WAVLM_MODEL_ENV, "").strip() or DEFAULT_WAVLM_MODEL)
        self.device = device
        self._model: Any = None
        self._extractor: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load from a local folder or the Hugging Face cache; never downloads."""
        with self._lock:
            if self._model is not None:
                return
            try:
                from vallex.optional_models import import_transformers

                transformers = import_transformers()
            except ImportError as error:
                raise VerifierUnavailableError(f"the WavLM verifier needs transformers ({error}); "
                                               "pip install 'vallex[s2st]'") from None
            source = self.model_name
            local = Path(source).expanduser()
            try:
                kwargs = {"local_files_only": True}
                name = str(local) if local.is_dir() else source
                self._extractor = transformers.AutoFeatureExtractor.from_pretrained(name, **kwargs)
                self._model = transformers.WavLMForXVector.from_pretrained(name, **kwargs).to(self.device).eval()
            except Exception as error:  # noqa: BLE001 - any hub/file error means "weights not here"
                raise VerifierUnavailableError(
                    f"WavLM verifier weights {source!r} are not on disk ({type(error).__name__}); download them "
                    f"once with `huggingface-cli download {DEFAULT_WAVLM_MODEL}`, or pass --wavlm FOLDER"
                ) from None

    def embed(self, wav: np.ndarray) -> tuple[np.ndarray, str | None]:
        """Unit-norm x-vector [512] of float32 samples [N] at 24 kHz."""
        import torch

        self.load()
        wav16 = resample(_check_wav(wav, "speaker similarity"), SAMPLE_RATE, VERIFIER_SAMPLE_RATE)
        inputs = self._extractor(wav16, sampling_rate=VERIFIER_SAMPLE_RATE, return_tensors="pt")
        with torch.no_grad():
            vector = self._model(**{k: v.to(self.device) for k, v in inputs.items()}).embeddings[0]  # [512]
        vector = torch.nn.functional.normalize(vector, dim=-1)
        return vector.cpu().numpy().astype(np.float32), None


def speaker_similarity(a: np.ndarray, b: np.ndarray, verifier: SpeakerVerifier | None = None) -> float:
    """Cosine similarity of the speakers of ``a`` and ``b`` (float32 [N] at 24 kHz); Resemblyzer by default."""
    verifier = verifier or ResemblyzerVerifier()
    return cosine(verifier.embed(a)[0], verifier.embed(b)[0])
