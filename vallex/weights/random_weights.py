"""Random weights for development: every model file in its real format, with untrained weights.

    make_random_weights("/tmp/w", size="tiny")   # a weights folder that every loader reads for real, offline
    codec = random_codec(seed=0)                 # an in-memory EnCodec + Vocos with real shapes

Nothing here is used to synthesise real speech: **everything made with these weights is noise**. The
folder's checksum file ``vallex-weights.json`` (read by :mod:`vallex.weights.checks`) marks it as random, so every
later use warns.

This module depends on :mod:`vallex.audio.codec` and :mod:`vallex.weights`, never the other way round.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vallex.audio.codec import AudioCodec, build_vocos, encodec_skeleton
from vallex.audio.codec_format import SAMPLE_RATE
from vallex.files import atomic_path, staged_files, write_text_atomic
from vallex.weights.checks import CHECKSUMS_NAME, NOISE_WARNING, read_checksums, sha256_file
from vallex.weights.manager import WeightPaths, WeightsManager
from vallex.weights.sources import ENCODEC_CHECKPOINT, VALLEX_CHECKPOINT, VALLEX_CONFIG_NAME, VOCOS_CONFIG, VOCOS_MODEL

if TYPE_CHECKING:
    from encodec import EncodecModel
    from vocos import Vocos

#: The values of vocos's configs/vocos-encodec.yaml (the published model's architecture).
_VOCOS_CONFIG: dict[str, Any] = {
    "feature_extractor": {
        "class_path": "vocos.feature_extractors.EncodecFeatures",
        "init_args": {"encodec_model": "encodec_24khz", "bandwidths": [1.5, 3.0, 6.0, 12.0],
                      "train_codebooks": False},
    },
    "backbone": {
        "class_path": "vocos.models.VocosBackbone",
        "init_args": {"input_channels": 128, "dim": 384, "intermediate_dim": 1152, "num_layers": 8,
                      "adanorm_num_embeddings": 4},
    },
    "head": {
        "class_path": "vocos.heads.ISTFTHead",
        "init_args": {"dim": 384, "n_fft": 1280, "hop_length": 320, "padding": "same"},
    },
}


def vocos_config_dict() -> dict[str, Any]:
    """A fresh copy of the published Vocos architecture, as written in its ``config.yaml``."""
    return copy.deepcopy(_VOCOS_CONFIG)


@torch.no_grad()
def build_random_encodec(seed: int = 0) -> EncodecModel:
    """An EnCodec 24 kHz with random weights whose codebooks produce varied codes.

    The untrained quantizer has all-zero codebooks (they are meant to be k-means-initialised on the first
    training batch), which would map every frame to code 0. Each codebook is therefore filled with jittered
    residual vectors of a seeded test signal, so that encoding gives codes spread over 0..1023.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seed the layer initialisers without touching the caller's RNG
        torch.manual_seed(seed)
        model = encodec_skeleton()
    seconds = 4
    t = torch.arange(seconds * SAMPLE_RATE) / SAMPLE_RATE
    signal = 0.3 * torch.sin(2 * torch.pi * (100 + 400 * t) * t) + 0.05 * torch.randn(t.shape, generator=generator)
    # On one thread: the convolutions' float rounding depends on the thread count on some CPUs (an Intel
    # Xeon with AMX), and the same seed must give the same codebooks in every process.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        residual = model.encoder(signal.view(1, 1, -1))[0].T  # [T, 128] encoder frames
    finally:
        torch.set_num_threads(threads)
    for layer in model.quantizer.vq.layers:
        codebook = layer._codebook
        picks = torch.randint(0, residual.shape[0], (codebook.codebook_size,), generator=generator)
        spread = residual.std() * 0.1 + 1e-6
        embed = residual[picks] + spread * torch.randn(codebook.embed.shape, generator=generator)
        codebook.embed.copy_(embed)
        codebook.embed_avg.copy_(embed)
        codebook.cluster_size.fill_(1.0)
        codebook.inited.fill_(1.0)
        residual = residual - codebook.dequantize(codebook.quantize(residual))
    return model.eval()


@torch.no_grad()
def build_random_vocos(encodec: EncodecModel, seed: int = 0) -> Vocos:
    """A Vocos with random backbone/head whose codebook table is ``encodec``'s (as in the real model)."""
    with torch.random.fork_rng(devices=[]):  # seed the layer initialisers without touching the caller's RNG
        torch.manual_seed(seed)
        vocos = build_vocos(vocos_config_dict(), encodec)
    features = vocos.feature_extractor
    table = torch.cat([layer.codebook for layer in encodec.quantizer.vq.layers[: features.num_q]], dim=0)
    features.codebook_weights.copy_(table)
    return vocos


def random_codec(seed: int = 0, device: str | torch.device = "cpu") -> AudioCodec:
    """Untrained EnCodec and Vocos built in memory (no files): shapes are real, sound is noise."""
    encodec = build_random_encodec(seed)
    return AudioCodec(encodec=encodec, vocos=build_random_vocos(encodec, seed), device=device)


def save_vocos(vocos: Vocos, config_path: str | Path, model_path: str | Path, config: dict[str, Any]) -> None:
    """Write ``config.yaml`` and ``pytorch_model.bin`` as the Hugging Face repository has them."""
    import yaml

    config_path, model_path = Path(config_path), Path(model_path)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(config_path, yaml.safe_dump(config, sort_keys=False))
    state = {key: value for key, value in vocos.state_dict().items()
             if not key.startswith("feature_extractor.encodec.")}
    with atomic_path(model_path) as partial:
        torch.save(state, partial)


def make_random_weights(directory: str | os.PathLike, size: str = "tiny", seed: int = 0,
                        force: bool = False) -> WeightPaths:
    """Write random-weight VALL-E X, EnCodec and Vocos files in the weights-folder layout.

    The files have exactly the formats of the real ones (so every loader runs for real, offline), plus a
    checksum file (``vallex-weights.json``) that marks them as random and records their SHA-256.
    ``size``: "tiny" (a 2-layer VALL-E X) or "full" (the public checkpoint's shape, 1.48 GB). EnCodec and
    Vocos always have their real architectures. **Everything synthesised with these files is noise.**
    A folder already holding model files not marked random by our checksum file is refused (ValueError) unless
    ``force``: they may be the only copy of real weights.
    """
    from vallex.config import VallexConfig
    from vallex.model import VallexModel
    from vallex.weights.checkpoint import save_checkpoint

    config = VallexConfig.named(size)
    directory = Path(directory)
    files = [VALLEX_CHECKPOINT.layout_name, VALLEX_CONFIG_NAME, ENCODEC_CHECKPOINT.layout_name,
             VOCOS_CONFIG.layout_name, VOCOS_MODEL.layout_name]
    if not force:
        _refuse_to_replace_real_weights(directory, files)
    with staged_files(directory) as staging:  # all five files and the checksum file, or none (a full disk)
        with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's random stream
            torch.manual_seed(seed)
            model = VallexModel(config)
            save_checkpoint(model, staging / VALLEX_CHECKPOINT.layout_name)
            config.to_json(staging / VALLEX_CONFIG_NAME)
            del model
        encodec = build_random_encodec(seed)
        with atomic_path(staging / ENCODEC_CHECKPOINT.layout_name) as partial:
            torch.save(encodec.state_dict(), partial)
        vocos = build_random_vocos(encodec, seed)
        save_vocos(vocos, staging / VOCOS_CONFIG.layout_name, staging / VOCOS_MODEL.layout_name, vocos_config_dict())
        checksums = {
            "random": True,
            "warning": NOISE_WARNING,
            "made_by": "vallex make-random-weights",
            "size": size,
            "seed": seed,
            "sha256": {name: sha256_file(staging / name) for name in files},
        }
        write_text_atomic(staging / CHECKSUMS_NAME, json.dumps(checksums, indent=1) + "\n")
    return WeightsManager(directory).resolve()


def _refuse_to_replace_real_weights(directory: Path, files: list[str]) -> None:
    """ValueError when ``directory`` holds any of ``files`` that is not random weights of ours.

    Ours: the checksum file says random and records each present file's SHA-256 (a file downloaded later over
    random weights changes its digest, so it counts as real).
    """
    present = [name for name in files if (directory / name).exists()]
    if not present:
        return
    try:
        checksums = read_checksums(directory) or {}
    except ValueError:  # a damaged checksum file proves nothing about the files beside it
        checksums = {}
    recorded = checksums.get("sha256", {}) if checksums.get("random") else {}
    ours = all((directory / name).is_file() and recorded.get(name) == sha256_file(directory / name)
               for name in present)
    if not ours:
        raise ValueError(f"{directory} holds model files ({', '.join(present)}) that are not random weights made by "
                         "make-random-weights; writing noise over them would replace them. Choose another folder, "
                         "or pass --force to replace them.")
