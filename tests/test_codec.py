"""EnCodec tokens and Vocos decoding with random-weight models built offline, loaded from their real file formats."""
from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from vallex.audio import FRAME_RATE, HOP, SAMPLE_RATE, load_audio
from vallex.audio.codec import build_vocos, load_vocos
from vallex.weights import pretrained_codec
from vallex.weights.random_weights import random_codec, vocos_config_dict


@pytest.fixture(scope="module")
def weights_dir(tiny_weights):
    return tiny_weights


@pytest.fixture(scope="module")
def codec(weights_dir):
    return pretrained_codec(weights_dir)


def speech_like(seconds: float, rate: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * (120 * t + 80 * t**2)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (tone + 0.03 * rng.standard_normal(t.shape)).astype(np.float32)


def test_constants_agree():
    assert SAMPLE_RATE == FRAME_RATE * HOP == 24_000 and HOP == 320


@pytest.mark.parametrize("samples", [24_000, 24_001, 23_999, 320, 7_777])
def test_encode_shape_dtype_range_and_frame_rate(codec, samples):
    codes = codec.encode_audio(speech_like(samples / SAMPLE_RATE)[:samples])
    assert codes.dtype == torch.int64
    assert codes.shape == (1, math.ceil(samples / HOP), 8)  # 75 frames per second of audio
    assert int(codes.min()) >= 0 and int(codes.max()) <= 1023


def test_codes_vary_with_the_audio(codec):
    codes = codec.encode_audio(speech_like(2.0))
    # The random codebooks are seeded from encoder outputs: codes must not collapse to one value.
    assert all(len(torch.unique(codes[0, :, k])) > 5 for k in range(8))
    other = codec.encode_audio(speech_like(2.0, seed=1) * 0.2)
    assert not torch.equal(codes, other)


def test_encode_decode_length_arithmetic(codec):
    wav = speech_like(1.3)
    codes = codec.encode_audio(wav)
    out = codec.decode_codes(codes)
    assert out.dtype == np.float32 and out.ndim == 1
    assert len(out) == HOP * codes.shape[1]  # 320 samples per frame, exactly
    assert 0 <= len(out) - len(wav) < HOP
    assert np.isfinite(out).all() and np.abs(out).max() > 0


def test_decode_accepts_2d_and_batches_consistently(codec):
    codes = codec.encode_audio(speech_like(0.8))
    single = codec.decode_codes(codes)
    np.testing.assert_array_equal(codec.decode_codes(codes[0]), single)
    other = torch.randint(0, 1024, codes.shape, generator=torch.Generator().manual_seed(3))
    batch = codec.decode_codes(torch.cat([codes, other]))
    assert batch.shape == (2, HOP * codes.shape[1])
    np.testing.assert_allclose(batch[0], single, atol=1e-5)
    np.testing.assert_allclose(batch[1], codec.decode_codes(other), atol=1e-5)


def test_batched_encode_matches_single(codec):
    a, b = speech_like(1.0, seed=2), speech_like(1.0, seed=3)
    batch = codec.encode_audio(np.stack([a, b]))
    assert batch.shape == (2, 75, 8)
    assert torch.equal(batch[:1], codec.encode_audio(a))
    assert torch.equal(batch[1:], codec.encode_audio(b))


def test_same_clip_from_file_and_gradio_tuple_gives_identical_codes(codec, tmp_path):
    rate = 44_100
    pcm = (np.stack([speech_like(1.5, rate), speech_like(1.5, rate, seed=4)], axis=1) * 32767).astype(np.int16)
    path = tmp_path / "clip.wav"
    sf.write(str(path), pcm, rate, subtype="PCM_16")
    from_file = codec.encode_audio(load_audio(path))
    from_gradio = codec.encode_audio(load_audio((rate, pcm)))
    assert torch.equal(from_file, from_gradio)


def test_decode_rejects_bad_codes(codec):
    with pytest.raises(ValueError, match="0..1023"):
        codec.decode_codes(torch.full((1, 5, 8), 1024))
    with pytest.raises(ValueError, match="shaped"):
        codec.decode_codes(torch.zeros(1, 5, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        codec.decode_codes(torch.zeros(1, 5, 8))
    assert codec.decode_codes(torch.zeros(1, 0, 8, dtype=torch.long)).shape == (0,)


def test_encode_rejects_bad_audio(codec):
    with pytest.raises(ValueError, match="NaN"):
        codec.encode_audio(np.full(1000, np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="float"):
        codec.encode_audio(np.zeros(1000, dtype=np.int16))
    with pytest.raises(ValueError, match="shaped"):
        codec.encode_audio(np.zeros(0, dtype=np.float32))


def test_models_load_lazily_once(weights_dir):
    fresh = pretrained_codec(weights_dir)
    assert fresh._encodec is None and fresh._vocos is None
    fresh.decode_codes(torch.zeros(1, 3, 8, dtype=torch.long))
    assert fresh._encodec is None and fresh._vocos is not None  # decoding never needs EnCodec's weights
    vocos = fresh.vocos
    fresh.decode_codes(torch.zeros(1, 3, 8, dtype=torch.long))
    assert fresh.vocos is vocos


def test_partial_codecs_say_what_they_lack(weights_dir):
    encoder_only = pretrained_codec(weights_dir, components=("encodec",))
    assert encoder_only.encode_audio(speech_like(0.2)).shape == (1, 15, 8)
    with pytest.raises(ValueError, match="without Vocos"):
        encoder_only.decode_codes(torch.zeros(1, 2, 8, dtype=torch.long))
    decoder_only = pretrained_codec(weights_dir, components=("vocos",))
    with pytest.raises(ValueError, match="without EnCodec"):
        decoder_only.encode_audio(speech_like(0.2))


def test_in_memory_random_codec_matches_the_files(weights_dir, codec):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    in_memory = random_codec(seed=0)
    assert torch.equal(torch.rand(1), expected_next)  # the caller's random stream is left alone
    wav = speech_like(1.0)
    assert torch.equal(in_memory.encode_audio(wav), codec.encode_audio(wav))
    codes = codec.encode_audio(wav)
    loaded, built = codec.vocos.state_dict(), in_memory.vocos.state_dict()
    assert list(loaded) == list(built)
    # Every weight decoding uses is the same (the saved file, like the hub's, leaves out the feature
    # extractor's own EnCodec, which decode_codes never runs), whatever thread count built the files.
    used = [k for k in loaded if not k.startswith("feature_extractor.encodec.")]
    assert used and all(torch.equal(loaded[k], built[k]) for k in used)
    np.testing.assert_array_equal(in_memory.decode_codes(codes), codec.decode_codes(codes))


def test_random_codebooks_do_not_depend_on_the_thread_count():
    from vallex.weights.random_weights import build_random_encodec

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = build_random_encodec(0).state_dict()
    finally:
        torch.set_num_threads(threads)
    one = build_random_encodec(0).state_dict()
    assert all(torch.equal(one[k], two[k]) for k in one)


def test_vocos_files_load_with_the_vocos_package_own_loader(weights_dir, codec, monkeypatch, tmp_path):
    """Our config.yaml + pytorch_model.bin work with ``Vocos.from_hparams`` + the ``from_pretrained`` steps.

    ``EncodecFeatures`` asks torch hub for the pretrained EnCodec; a file of the right name in
    ``$TORCH_HOME/hub/checkpoints`` is used without a download, so we put our random EnCodec there.
    """
    from vocos import Vocos

    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "encodec_24khz-d7cc33bc.th").symlink_to(weights_dir / "encodec_24khz-d7cc33bc.th")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    model = Vocos.from_hparams(str(weights_dir / "vocos-encodec-24khz" / "config.yaml"))
    state = torch.load(weights_dir / "vocos-encodec-24khz" / "pytorch_model.bin", weights_only=True)
    state.update({f"feature_extractor.encodec.{k}": v for k, v in model.feature_extractor.encodec.state_dict().items()})
    model.load_state_dict(state)  # strict: every key of the package's own model is in our file
    model.eval()
    codes = codec.encode_audio(speech_like(0.6))
    with torch.no_grad():
        features = model.codes_to_features(codes.permute(2, 0, 1))
        expected = model.decode(features, bandwidth_id=torch.tensor([2]))[0].numpy()
    np.testing.assert_allclose(codec.decode_codes(codes), expected, atol=1e-6)


def test_vocos_config_only_accepts_the_published_classes(weights_dir, tmp_path):
    config = vocos_config_dict()
    config["backbone"]["class_path"] = "os.system"
    with pytest.raises(ValueError, match="backbone must be vocos.models.VocosBackbone"):
        build_vocos(config)
    bad = tmp_path / "config.yaml"
    bad.write_text("backbone: [1, 2\n")
    with pytest.raises(ValueError, match="YAML"):
        load_vocos(bad, weights_dir / "vocos-encodec-24khz" / "pytorch_model.bin")
    small = vocos_config_dict()
    small["backbone"]["init_args"]["num_layers"] = 2
    import yaml

    mismatched = tmp_path / "small.yaml"
    mismatched.write_text(yaml.safe_dump(small))
    with pytest.raises(ValueError, match="does not match"):
        load_vocos(mismatched, weights_dir / "vocos-encodec-24khz" / "pytorch_model.bin")
