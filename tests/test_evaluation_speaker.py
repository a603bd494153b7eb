"""Speaker similarity on real speech: espeak-ng voices that differ in timbre, pitch and language.

Each voice speaks three different sentences; Resemblyzer must rate every same-voice pair above every
different-voice pair (not only on average).
"""
from __future__ import annotations

import io
import itertools
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from vallex.audio import SAMPLE_RATE, load_audio
from vallex.evaluation.speaker import ResemblyzerVerifier, cosine, speaker_similarity

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng (Debian package) not installed")

#: Distinct voices: low male, high female, Klatt synthesiser, whispered, French female at high pitch.
VOICES = {
    "male_low": ["-v", "en+m3", "-p", "30"],
    "female_high": ["-v", "en+f2", "-p", "80"],
    "klatt": ["-v", "en+klatt4"],
    "whisper": ["-v", "en+whisper"],
    "french_female": ["-v", "fr+f4", "-p", "90"],
}
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "She sells sea shells by the sea shore every summer morning.",
    "Please call Stella and ask her to bring these things with her from the store.",
]


def espeak(args: list[str], text: str) -> np.ndarray:
    """espeak-ng speech as float32 [N] at 24 kHz."""
    wav_bytes = subprocess.run(["espeak-ng", *args, "--stdout", text], check=True, capture_output=True).stdout
    data, rate = sf.read(io.BytesIO(wav_bytes), dtype="float32")
    return load_audio(data, rate)


@pytest.fixture(scope="module")
def verifier() -> ResemblyzerVerifier:
    return ResemblyzerVerifier(device="cpu")


@pytest.fixture(scope="module")
def embeddings(verifier) -> dict[tuple[str, int], np.ndarray]:
    result = {}
    for voice, args in VOICES.items():
        for index, sentence in enumerate(SENTENCES):
            embedding, note = verifier.embed(espeak(args, sentence))
            assert note is None, f"VAD found no speech in {voice} #{index}"
            result[(voice, index)] = embedding
    return result


def test_same_voice_pairs_rank_above_different_voice_pairs(embeddings):
    same, different = [], []
    for a, b in itertools.combinations(embeddings, 2):
        score = cosine(embeddings[a], embeddings[b])
        (same if a[0] == b[0] else different).append((score, a, b))
    assert len(same) == len(VOICES) * 3 and len(different) == len(VOICES) * (len(VOICES) - 1) // 2 * 9
    worst_same, best_different = min(same), max(different)
    assert worst_same[0] > best_different[0], (worst_same, best_different)


def test_embeddings_are_unit_vectors_and_self_similarity_is_one(embeddings, verifier):
    for embedding in embeddings.values():
        assert embedding.shape == (256,)
        assert np.linalg.norm(embedding) == pytest.approx(1.0, abs=1e-4)
    wav = espeak(VOICES["klatt"], SENTENCES[0])
    assert speaker_similarity(wav, wav.copy(), verifier) == pytest.approx(1.0, abs=1e-5)


def test_noise_is_embedded_untrimmed_with_a_note(verifier):
    noise = np.random.default_rng(0).normal(0, 1e-3, 2 * SAMPLE_RATE).astype(np.float32)
    embedding, note = verifier.embed(noise)
    assert "VAD" in note
    assert np.all(np.isfinite(embedding))


def test_bad_audio_is_refused(verifier):
    with pytest.raises(ValueError, match="too short"):
        verifier.embed(np.zeros(100, dtype=np.float32))
    with pytest.raises(ValueError, match=r"mono samples \[N\]"):
        verifier.embed(np.zeros((2, SAMPLE_RATE), dtype=np.float32))
    with pytest.raises(ValueError, match="all-zero"):
        cosine(np.zeros(4), np.ones(4))
