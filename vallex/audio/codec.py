"""Audio ↔ codes: EnCodec 24 kHz at 6 kbps (8 codebooks × 1024 bins, 75 frames/s) and the Vocos vocoder.

    codec = AudioCodec.from_paths(resolve_weights())  # or vallex.weights.pretrained_codec(), the same
    codes = codec.encode_audio(load_audio("me.wav"))  # LongTensor [1, T, 8]
    wav = codec.decode_codes(codes)                 # float32 [320 * T] at 24 kHz
    part = codec.decode_codes_window(codes, 75, 150)  # the same samples [24000, 48000), from nearby codes only

The VALL-E X checkpoint was trained on these codes; its outputs are turned back into sound with Vocos
``charactr/vocos-encodec-24khz`` (bandwidth id 2 = 6 kbps), as the reference does. Both models load lazily,
once, on first use.

Vocos is built from its classes here rather than with ``Vocos.from_pretrained``: that would instantiate
whatever class the yaml names and ask for the pretrained EnCodec over the network, although decoding codes
only needs Vocos's own codebook table (stored in its checkpoint).
"""
from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

from vallex.audio.codec_format import CODEBOOK_SIZE, HOP, NUM_CODEBOOKS

if TYPE_CHECKING:
    from encodec import EncodecModel
    from vocos import Vocos

#: EnCodec target bandwidth in kbps: NUM_CODEBOOKS codebooks.
ENCODEC_BANDWIDTH = 6.0
#: Index of 6 kbps in Vocos's bandwidth list [1.5, 3, 6, 12].
VOCOS_BANDWIDTH_ID = 2


class CodecFiles(Protocol):
    """Where the codec's files are (as :class:`vallex.weights.WeightPaths` has them; None: not available)."""

    @property
    def encodec(self) -> Path | None: ...  # EnCodec 24 kHz state dict

    @property
    def vocos_config(self) -> Path | None: ...  # Vocos config.yaml

    @property
    def vocos_model(self) -> Path | None: ...  # Vocos pytorch_model.bin


def _import_codec_packages() -> None:
    from vallex.audio._torchaudio_guard import ensure_torchaudio

    ensure_torchaudio()  # encodec and vocos import torchaudio at import time


# EnCodec ------------------------------------------------------------------------------------------

def encodec_skeleton() -> EncodecModel:
    """The EnCodec 24 kHz architecture with untrained weights (no download), set to 6 kbps, eval mode."""
    _import_codec_packages()
    from encodec import EncodecModel

    with warnings.catch_warnings():
        # encodec 0.1.1 uses torch.nn.utils.weight_norm, which torch deprecates; nothing for users to act on.
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        model = EncodecModel.encodec_model_24khz(pretrained=False)
    model.set_target_bandwidth(ENCODEC_BANDWIDTH)
    return model.eval()


def load_encodec(path: str | Path, device: str | torch.device = "cpu") -> EncodecModel:
    """EnCodec 24 kHz from its torch hub state-dict file (read with ``weights_only=True``)."""
    model = encodec_skeleton()
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as error:  # unpickling refusals, wrong keys/shapes
        raise ValueError(f"{path} is not an EnCodec 24 kHz state dict: {error}") from None
    return model.to(device).eval()


# Vocos --------------------------------------------------------------------------------------------

def _encodec_features_class() -> type:
    _import_codec_packages()
    from vocos.feature_extractors import EncodecFeatures, FeatureExtractor

    class CodebookFeatures(EncodecFeatures):
        """Vocos's EnCodec feature extractor, built without fetching the pretrained EnCodec.

        Decoding codes uses only ``codebook_weights`` (loaded from the Vocos checkpoint) and the quantizer's
        geometry, so the EnCodec inside may be the untrained skeleton; pass the real one to use Vocos's
        audio-in path (``Vocos.forward``).
        """

        def __init__(self, bandwidths: list[float], encodec: nn.Module | None = None):
            FeatureExtractor.__init__(self)
            self.encodec = encodec if encodec is not None else encodec_skeleton()
            for param in self.encodec.parameters():
                param.requires_grad = False
            self.num_q = self.encodec.quantizer.get_num_quantizers_for_bandwidth(
                self.encodec.frame_rate, bandwidth=max(bandwidths))
            dim = self.encodec.quantizer.vq.layers[0]._codebook.embed.shape[1]
            self.codebook_weights = nn.Parameter(torch.zeros(self.num_q * self.encodec.quantizer.bins, dim),
                                                 requires_grad=False)
            self.bandwidths = list(bandwidths)

    return CodebookFeatures


def build_vocos(config: dict[str, Any], encodec: nn.Module | None = None) -> Vocos:
    """A Vocos with the architecture ``config`` (the ``config.yaml`` dict) and untrained weights.

    Only the published model's classes are accepted: a config cannot make us import arbitrary code.
    """
    _import_codec_packages()
    from vocos import Vocos
    from vocos.heads import ISTFTHead
    from vocos.models import VocosBackbone

    expected = {"feature_extractor": "vocos.feature_extractors.EncodecFeatures",
                "backbone": "vocos.models.VocosBackbone", "head": "vocos.heads.ISTFTHead"}
    try:
        for part, class_path in expected.items():
            if config[part]["class_path"] != class_path:
                raise ValueError(f"Vocos config: {part} must be {class_path}, not {config[part]['class_path']!r}.")
        features_args = dict(config["feature_extractor"].get("init_args", {}))
        if features_args.get("encodec_model", "encodec_24khz") != "encodec_24khz":
            raise ValueError("Vocos config: only encodec_model 'encodec_24khz' is supported.")
        features = _encodec_features_class()(features_args.get("bandwidths", [1.5, 3.0, 6.0, 12.0]), encodec)
        backbone = VocosBackbone(**config["backbone"]["init_args"])
        head = ISTFTHead(**config["head"]["init_args"])
    except (KeyError, TypeError) as error:
        raise ValueError(f"Vocos config is malformed ({type(error).__name__}: {error}).") from None
    return Vocos(feature_extractor=features, backbone=backbone, head=head).eval()


def load_vocos(config_path: str | Path, model_path: str | Path, device: str | torch.device = "cpu",
               encodec: nn.Module | None = None) -> Vocos:
    """Vocos from ``config.yaml`` + ``pytorch_model.bin`` (the Hugging Face repository's files).

    The checkpoint holds everything but the EnCodec inside the feature extractor (which
    ``Vocos.from_pretrained`` also fills from the EnCodec model itself).
    """
    import yaml

    try:
        config = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"{config_path} is not valid YAML: {error}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} must be a YAML mapping with feature_extractor, backbone and head.")
    vocos = build_vocos(config, encodec)
    try:
        state = torch.load(Path(model_path), map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{model_path} could not be read safely as a Vocos state dict: {error}") from None
    encodec_state = {f"feature_extractor.encodec.{key}": value
                     for key, value in vocos.feature_extractor.encodec.state_dict().items()}
    state = {**state, **encodec_state}
    try:
        vocos.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{model_path} does not match the Vocos architecture in {config_path}: {error}") from None
    return vocos.to(device).eval()


# The codec ----------------------------------------------------------------------------------------

class AudioCodec:
    """EnCodec tokenizer + Vocos decoder, each loaded on first use and then reused (thread-safe).

    Build with :func:`vallex.weights.pretrained_codec` (the published weights), :meth:`from_paths` (files found
    by :mod:`vallex.weights`) or from models in memory (:func:`vallex.weights.random_weights.random_codec`, for
    tests).
    """

    def __init__(self, paths: CodecFiles | None = None, *, encodec: EncodecModel | None = None,
                 vocos: Vocos | None = None, device: str | torch.device = "cpu"):
        self.paths = paths
        self.device = torch.device(device)
        self._encodec = encodec.to(self.device).eval() if encodec is not None else None
        self._vocos = vocos.to(self.device).eval() if vocos is not None else None
        self._lock = threading.Lock()
        if paths is None and (encodec is None or vocos is None):
            raise ValueError("AudioCodec needs weight paths, or both an EnCodec and a Vocos model.")

    @classmethod
    def from_paths(cls, paths: CodecFiles, device: str | torch.device = "cpu") -> AudioCodec:
        """Use the EnCodec/Vocos files of ``paths`` (loaded lazily; a missing one fails only when needed)."""
        if paths.encodec is None and (paths.vocos_config is None or paths.vocos_model is None):
            raise ValueError("The weight paths hold neither EnCodec nor Vocos files: resolve them with "
                             "components=('encodec', 'vocos').")
        return cls(paths, device=device)

    @property
    def encodec(self) -> EncodecModel:
        if self._encodec is None:
            with self._lock:
                if self._encodec is None:
                    if self.paths is None or self.paths.encodec is None:
                        raise ValueError("This AudioCodec was made without EnCodec weights, so it cannot encode "
                                         "audio; build it with components=('encodec', 'vocos').")
                    self._encodec = load_encodec(self.paths.encodec, self.device)
        return self._encodec

    @property
    def vocos(self) -> Vocos:
        if self._vocos is None:
            with self._lock:
                if self._vocos is None:
                    if self.paths is None or self.paths.vocos_config is None or self.paths.vocos_model is None:
                        raise ValueError("This AudioCodec was made without Vocos weights, so it cannot decode "
                                         "codes; build it with components=('encodec', 'vocos').")
                    self._vocos = load_vocos(self.paths.vocos_config, self.paths.vocos_model, self.device)
        return self._vocos

    def load(self) -> AudioCodec:
        """Load EnCodec and Vocos now rather than at first use (those this codec has files for); returns self.

        Why: a server that loads at start-up pays no loading time inside a request (on a ZeroGPU Space, inside
        the minutes of GPU time the request reserved).
        """
        if self._encodec is None and self.paths is not None and self.paths.encodec is not None:
            self.encodec  # noqa: B018 - the property loads it
        if self._vocos is None and self.paths is not None and self.paths.vocos_model is not None:
            self.vocos  # noqa: B018
        return self

    # Encode / decode ----------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_audio(self, wav: np.ndarray | torch.Tensor) -> torch.Tensor:
        """EnCodec codes of 24 kHz mono audio.

        Args:
            wav: float samples at 24 kHz, ``[N]`` (one clip) or ``[B, N]`` (a batch of equal-length clips),
                as :func:`vallex.audio.load_audio` returns them.

        Returns:
            LongTensor ``[B, T, 8]`` on the CPU (``B = 1`` for one clip), codes in 0..1023,
            ``T = ceil(N / 320)`` frames at 75 Hz.
        """
        samples = torch.as_tensor(np.asarray(wav) if not isinstance(wav, torch.Tensor) else wav)
        if samples.dim() == 1:
            samples = samples.unsqueeze(0)
        if samples.dim() == 3 and samples.shape[1] == 1:
            samples = samples[:, 0]
        if samples.dim() != 2 or samples.shape[-1] == 0:
            raise ValueError(f"encode_audio expects 24 kHz samples shaped [N] or [B, N], got {tuple(samples.shape)}.")
        if not samples.is_floating_point():
            raise ValueError("encode_audio expects float samples in [-1, 1]; load audio with vallex.audio.load_audio.")
        if not torch.isfinite(samples).all():
            raise ValueError("encode_audio got NaN or infinite samples.")
        x = samples.to(device=self.device, dtype=torch.float32).unsqueeze(1)  # [B, 1, N]
        frames = self.encodec.encode(x)
        codes = torch.cat([frame_codes for frame_codes, _ in frames], dim=-1)  # [B, 8, T]
        return codes.transpose(1, 2).to("cpu", torch.long).contiguous()  # [B, T, 8]

    @torch.inference_mode()
    def decode_codes(self, codes: torch.Tensor | np.ndarray) -> np.ndarray:
        """Waveform of EnCodec codes through Vocos (bandwidth id 2 = 6 kbps).

        Args:
            codes: integer codes in 0..1023 shaped ``[T, 8]``, ``[1, T, 8]`` or ``[B, T, 8]``.

        Returns:
            float32 samples at 24 kHz: ``[320 * T]`` for one clip, ``[B, 320 * T]`` for B > 1.
        """
        if not isinstance(codes, torch.Tensor):
            codes = torch.as_tensor(codes, device="cpu")  # numpy's data is on the CPU, whatever torch's default
        if codes.dim() == 2:
            codes = codes.unsqueeze(0)
        if codes.dim() != 3 or codes.shape[-1] != NUM_CODEBOOKS:
            raise ValueError(f"decode_codes expects codes shaped [B, T, {NUM_CODEBOOKS}], got {tuple(codes.shape)}.")
        if codes.is_floating_point() or codes.is_complex():
            raise ValueError("decode_codes expects integer codes.")
        batch, frames, _ = codes.shape
        if frames == 0:
            empty = np.zeros((batch, 0), dtype=np.float32)
            return empty[0] if batch == 1 else empty
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= CODEBOOK_SIZE:
            raise ValueError(f"Codes must be in 0..{CODEBOOK_SIZE - 1}, got values {low}..{high} "
                             f"({CODEBOOK_SIZE} is the model's end-of-speech id and must be removed first).")
        vocos = self.vocos
        codes = codes.to(self.device, torch.long).permute(2, 0, 1)  # [8, B, T]
        features = vocos.codes_to_features(codes)  # [B, 128, T]
        bandwidth_id = torch.tensor([VOCOS_BANDWIDTH_ID], device=self.device)
        wav = vocos.decode(features, bandwidth_id=bandwidth_id)  # [B, 320 * T]
        wav = wav.float().cpu().numpy()
        assert wav.shape == (batch, frames * HOP), wav.shape  # internal invariant of ISTFTHead(padding="same")
        return wav[0] if batch == 1 else wav

    @property
    def context_frames(self) -> int:
        """Vocos's receptive field in frames, each side: codes further away do not change a sample.

        Read from the loaded model: the embedding conv and every ConvNeXt block's depthwise conv each see
        ``(kernel - 1) / 2`` frames to each side (3 + 8 × 3 in the published model), and with
        ``padding="same"`` an ISTFT output sample overlaps the windows of ``win / hop / 2`` frames to each
        side (2): 29 frames (0.39 s) for ``charactr/vocos-encodec-24khz``.
        """
        vocos = self.vocos
        convs = [vocos.backbone.embed] + [block.dwconv for block in vocos.backbone.convnext]
        istft = vocos.head.istft
        return sum((conv.kernel_size[0] - 1) // 2 for conv in convs) + -(-istft.win_length // istft.hop_length) // 2

    def decode_codes_window(self, codes: torch.Tensor | np.ndarray, start: int, end: int,
                            context: int | None = None) -> np.ndarray:
        """Samples ``[320 * start, 320 * end)`` of ``decode_codes(codes)``, vocoding only the frames near them.

        Decodes frames ``[start - context, end + context)`` (clipped to the clip) and crops, so audio can
        be made piece by piece while more codes arrive: with ``context >= context_frames`` (the default)
        the concatenated pieces equal decoding the whole clip (up to float rounding), whatever the weights.
        A smaller ``context`` trades exactness for less lookahead (the error falls off quickly with it).

        Args:
            codes: one clip's integer codes, ``[T, 8]`` or ``[1, T, 8]``.
            start, end: frame range at 75 Hz, ``0 <= start <= end <= T``.
            context: frames of codes to use on each side (default :attr:`context_frames`).

        Returns:
            float32 samples at 24 kHz, ``[320 * (end - start)]``.
        """
        codes = torch.as_tensor(codes)
        if codes.dim() == 2:
            codes = codes.unsqueeze(0)
        if codes.dim() != 3 or codes.shape[0] != 1:
            raise ValueError(f"decode_codes_window expects one clip's codes shaped [T, {NUM_CODEBOOKS}] or "
                             f"[1, T, {NUM_CODEBOOKS}], got {tuple(codes.shape)}.")
        frames = codes.shape[1]
        if not 0 <= start <= end <= frames:
            raise ValueError(f"decode_codes_window needs 0 <= start <= end <= {frames} (the number of frames), "
                             f"got start={start}, end={end}.")
        if context is None:
            context = self.context_frames
        if context < 0:
            raise ValueError(f"context must be >= 0 frames, got {context}.")
        low, high = max(0, start - context), min(frames, end + context)
        wav = self.decode_codes(codes[:, low:high])  # [320 * (high - low)]
        return wav[(start - low) * HOP:(end - low) * HOP]
