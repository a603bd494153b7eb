"""Voice prompts: the reference .npz format (golden presets), making prompts, and named presets."""
from __future__ import annotations

import json
import math
import sys
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch

from vallex.audio import HOP, SAMPLE_RATE
from vallex.languages import MODEL_LANGUAGE_ID, NPZ_LANGUAGE_CODE
from vallex.prompts import PresetLibrary, VoicePrompt, find_transcriber, make_prompt, validate_name
from vallex.weights import pretrained_codec


@pytest.fixture(scope="module")
def weights_dir(tiny_weights):
    return tiny_weights


@pytest.fixture(scope="module")
def codec(weights_dir):
    return pretrained_codec(weights_dir, components=("encodec",))  # prompts need no vocoder


def golden_presets(golden):
    presets = sorted((golden / "presets").glob("*.npz"))
    assert presets, f"no presets in {golden / 'presets'}"
    return presets


def speech_like(seconds: float, rate: int = SAMPLE_RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * (140 * t + 60 * t**2)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return np.stack([tone * (1 - 0.3 * c) for c in range(channels)], axis=1).astype(np.float32)


class FixedTranscriber:
    """A stand-in speech recogniser that always hears the same words (implements the Transcriber protocol)."""

    def __init__(self, text: str, language: str):
        self.text, self.language, self.calls = text, language, 0

    def transcribe(self, wav: np.ndarray) -> tuple[str, str]:
        assert wav.dtype == np.float32 and wav.ndim == 1
        self.calls += 1
        return self.text, self.language


# The reference .npz format ---------------------------------------------------------------------------

def test_golden_presets_load_with_the_right_shapes_and_language(golden):
    table_path = golden / "presets" / "presets_table.json"
    table = {row["name"]: row for row in json.loads(table_path.read_text())} if table_path.is_file() else {}
    for path in golden_presets(golden):
        prompt = VoicePrompt.load_npz(path)
        raw = np.load(path, allow_pickle=False)
        assert prompt.codes.dtype == torch.int64 and prompt.codes.shape == raw["audio_tokens"].shape
        assert prompt.codes.shape[0] == 1 and prompt.codes.shape[2] == 8
        assert torch.equal(prompt.codes, torch.from_numpy(raw["audio_tokens"]))
        assert prompt.text_ids == raw["text_tokens"].reshape(-1).tolist()
        # lang_code uses the npz table (zh0 ja1 en2); the model numbers languages en0 zh1 ja2.
        assert NPZ_LANGUAGE_CODE[prompt.language] == int(raw["lang_code"])
        assert MODEL_LANGUAGE_ID[prompt.language] == {0: 1, 1: 2, 2: 0}[int(raw["lang_code"])]
        assert prompt.seconds == pytest.approx(prompt.num_frames / 75)
        if path.stem in table:
            row = table[path.stem]
            assert prompt.language == row["lang"] and prompt.num_frames == row["frames"]
            assert len(prompt.text_ids) == row["text_tokens"]


def test_golden_presets_round_trip_byte_identically(golden, tmp_path):
    for path in golden_presets(golden):
        prompt = VoicePrompt.load_npz(path)
        out = prompt.save_npz(tmp_path / path.name)
        assert out.read_bytes() == path.read_bytes(), path.name
        assert prompt.to_npz_bytes() == path.read_bytes()
        again = VoicePrompt.load_npz(out)
        assert again == prompt and again is not prompt


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_lang_code_int32_and_int64_are_accepted_and_kept(tmp_path, dtype):
    path = tmp_path / "p.npz"
    codes = np.random.default_rng(0).integers(0, 1024, (1, 30, 8))
    np.savez(path, audio_tokens=codes, text_tokens=np.array([[18, 19, 20]]), lang_code=np.array(1, dtype=dtype))
    prompt = VoicePrompt.load_npz(path)
    assert prompt.language == "ja"
    prompt.save_npz(tmp_path / "q.npz")
    saved = np.load(tmp_path / "q.npz", allow_pickle=False)
    assert saved["lang_code"].dtype == dtype and saved["lang_code"].shape == ()
    assert saved["audio_tokens"].dtype == np.int64 and saved["text_tokens"].dtype == np.int64
    assert (tmp_path / "q.npz").read_bytes() == path.read_bytes()  # np.savez's own layout is kept too


def test_new_prompt_saves_in_the_reference_format(tmp_path):
    codes = torch.randint(0, 1024, (1, 40, 8), generator=torch.Generator().manual_seed(0))
    prompt = VoicePrompt(codes=codes, text_ids=torch.tensor([[5, 6, 7]]), language="zh", transcript="你好")
    path = prompt.save_npz(tmp_path / "new.npz")
    with zipfile.ZipFile(path) as archive:
        assert [i.filename for i in archive.infolist()] == ["audio_tokens.npy", "text_tokens.npy", "lang_code.npy"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in archive.infolist())
    data = np.load(path, allow_pickle=False)
    assert data["audio_tokens"].shape == (1, 40, 8) and data["audio_tokens"].dtype == np.int64
    assert data["text_tokens"].tolist() == [[5, 6, 7]] and int(data["lang_code"]) == 0  # zh = 0 in files
    assert prompt.save_npz(tmp_path / "again.npz").read_bytes() == path.read_bytes()  # deterministic
    assert prompt.text_tensor.shape == (1, 3) and prompt.text_tensor.dtype == torch.int64


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("arrays,message", [
    ({"text_tokens": np.zeros((1, 3), int), "lang_code": np.array(2)}, "missing audio_tokens"),
    ({"audio_tokens": np.zeros((30, 8), int), "text_tokens": np.zeros((1, 3), int), "lang_code": np.array(2)},
     r"\[1, T, 8\]"),
    ({"audio_tokens": np.full((1, 30, 8), 1024), "text_tokens": np.zeros((1, 3), int), "lang_code": np.array(2)},
     "0..1023"),
    ({"audio_tokens": np.zeros((1, 30, 8), int), "text_tokens": np.zeros((1, 3), int), "lang_code": np.array(7)},
     "unknown lang_code"),
    ({"audio_tokens": np.zeros((1, 30, 8)), "text_tokens": np.zeros((1, 3), int), "lang_code": np.array(2)},
     "integer"),
    ({"audio_tokens": np.zeros((1, 1200, 8), int), "text_tokens": np.zeros((1, 3), int), "lang_code": np.array(2)},
     "at most 15 s"),
    ({"audio_tokens": np.array([None], dtype=object), "text_tokens": np.zeros((1, 3), int),
      "lang_code": np.array(2)}, "could not read"),
])
def test_bad_npz_files_are_value_errors(tmp_path, arrays, message):
    path = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        VoicePrompt.load_npz(path)


def test_not_an_npz(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(b"hello")
    with pytest.raises(ValueError, match="not an .npz"):
        VoicePrompt.load_npz(path)
    with pytest.raises(FileNotFoundError):
        VoicePrompt.load_npz(tmp_path / "missing.npz")


def test_voice_prompt_validates_its_fields():
    # Any language code is a prompt's language (a model trained on it speaks with it); whether the model in use
    # speaks it is checked when the prompt is used (test_new_language.py).
    for bad in ("Klingon!", "", 3):
        with pytest.raises(ValueError, match="(?i)language"):
            VoicePrompt(codes=torch.zeros(1, 3, 8, dtype=torch.long), text_ids=[1], language=bad)
    assert VoicePrompt(codes=torch.zeros(1, 3, 8, dtype=torch.long), text_ids=[1], language="KO").language == "ko"
    with pytest.raises(ValueError, match=r"\[1, T, 8\]"):
        VoicePrompt(codes=torch.zeros(2, 3, 8, dtype=torch.long), text_ids=[1], language="en")
    with pytest.raises(ValueError, match="text ids"):
        VoicePrompt(codes=torch.zeros(1, 3, 8, dtype=torch.long), text_ids=[-1], language="en")
    prompt = VoicePrompt(codes=np.zeros((3, 8), dtype=np.int32), text_ids=(1, 2), language="English")
    assert prompt.codes.shape == (1, 3, 8) and prompt.codes.dtype == torch.int64 and prompt.language == "en"
    assert prompt == VoicePrompt(codes=torch.zeros(1, 3, 8, dtype=torch.long), text_ids=[1, 2], language="en")
    assert prompt != VoicePrompt(codes=torch.zeros(1, 3, 8, dtype=torch.long), text_ids=[1, 2], language="zh")
    assert prompt != VoicePrompt(codes=torch.ones(1, 3, 8, dtype=torch.long), text_ids=[1, 2], language="en")


# Presets --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../x", "..", "a/b", "a\\b", "", "x" * 65, "name.npz", "/etc/passwd", "a b",
                                  "ü", None, 3])
def test_invalid_prompt_names_are_refused(tmp_path, name):
    library = PresetLibrary(tmp_path)
    prompt = VoicePrompt(codes=torch.zeros(1, 3, 8, dtype=torch.long), text_ids=[1], language="en")
    with pytest.raises(ValueError, match="Invalid prompt name"):
        validate_name(name)
    with pytest.raises(ValueError, match="Invalid prompt name"):
        library.save(name, prompt)
    with pytest.raises(ValueError, match="Invalid prompt name"):
        library.load(name)
    assert name not in library
    assert list(tmp_path.iterdir()) == []  # nothing was written anywhere near


def test_preset_library_save_list_load_delete(tmp_path, golden):
    library = PresetLibrary(tmp_path / "presets")
    assert library.names() == []
    source = golden_presets(golden)[0]
    prompt = VoicePrompt.load_npz(source)
    library.save("My_voice-1", prompt)
    assert library.names() == ["My_voice-1"] and "My_voice-1" in library
    loaded = library.load("My_voice-1")
    assert loaded.name == "My_voice-1" and torch.equal(loaded.codes, prompt.codes)
    with pytest.raises(ValueError, match="already exists"):
        library.save("My_voice-1", prompt)
    library.save("My_voice-1", prompt, overwrite=True)
    (library.directory / "not a name.npz").write_bytes(source.read_bytes())
    assert library.names() == ["My_voice-1"]
    with pytest.raises(ValueError, match="Unknown voice preset 'other'"):
        library.load("other")
    library.delete("My_voice-1")
    assert library.names() == []


def test_preset_symlink_out_of_the_folder_is_refused(tmp_path, golden):
    outside = tmp_path / "outside.npz"
    outside.write_bytes(golden_presets(golden)[0].read_bytes())
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "sneaky.npz").symlink_to(outside)
    with pytest.raises(ValueError, match="outside the preset folder"):
        PresetLibrary(folder).load("sneaky")
    assert PresetLibrary(folder).names() == []


# Making prompts -------------------------------------------------------------------------------------

def test_make_prompt_from_audio_and_transcript(codec, tmp_path):
    from vallex.text import tokenize

    path = tmp_path / "me.wav"
    sf.write(str(path), speech_like(2.5, 16_000), 16_000)
    prompt = make_prompt(path, "Hello there, this is my voice.", codec=codec, name="me")
    assert prompt.codes.shape == (1, math.ceil(2.5 * SAMPLE_RATE / HOP), 8)
    assert prompt.language == "en" and prompt.name == "me"
    assert prompt.text_ids == tokenize("Hello there, this is my voice.", "en").ids
    zh = make_prompt(path, "今天天气很好。", codec=codec)
    assert zh.language == "zh" and zh.text_ids == tokenize("今天天气很好。", "zh").ids
    forced = make_prompt(path, "Hello there.", language="English", codec=codec)
    assert forced.language == "en"


def test_make_prompt_file_and_gradio_tuple_give_the_same_prompt(codec, tmp_path):
    rate = 44_100
    pcm = (speech_like(2.0, rate, channels=2) * 32767).astype(np.int16)
    path = tmp_path / "mic.wav"
    sf.write(str(path), pcm, rate, subtype="PCM_16")
    from_file = make_prompt(path, "Good morning.", codec=codec)
    from_gradio = make_prompt((rate, pcm), "Good morning.", codec=codec)
    assert torch.equal(from_file.codes, from_gradio.codes) and from_file.text_ids == from_gradio.text_ids


def test_make_prompt_without_transcript_or_recogniser_asks_for_one(codec, monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    monkeypatch.setitem(sys.modules, "whisper", None)
    assert find_transcriber() is None
    with pytest.raises(ValueError, match="No transcript given"):
        make_prompt(speech_like(2.0)[:, 0], None, codec=codec, sample_rate=SAMPLE_RATE)
    with pytest.raises(ValueError, match="No transcript given"):
        make_prompt(speech_like(2.0)[:, 0], "   ", codec=codec, sample_rate=SAMPLE_RATE)


def test_make_prompt_with_a_recogniser(codec):
    heard = FixedTranscriber("Nice to meet you", "en")
    prompt = make_prompt(speech_like(2.0)[:, 0], codec=codec, transcriber=heard, sample_rate=SAMPLE_RATE)
    assert heard.calls == 1 and prompt.transcript == "Nice to meet you." and prompt.language == "en"
    with pytest.raises(ValueError, match=r"heard Korean \('ko'\).*Give the transcript and its language"):
        make_prompt(speech_like(2.0)[:, 0], codec=codec, transcriber=FixedTranscriber("안녕하세요", "ko"),
                    sample_rate=SAMPLE_RATE)
    with pytest.raises(ValueError, match="heard no words"):
        make_prompt(speech_like(2.0)[:, 0], codec=codec, transcriber=FixedTranscriber("  ", "en"),
                    sample_rate=SAMPLE_RATE)


def test_make_prompt_rejects_long_audio_and_bad_names(codec):
    with pytest.raises(ValueError, match="at most 15 s"):
        make_prompt(speech_like(16.0)[:, 0], "Too long.", codec=codec, sample_rate=SAMPLE_RATE)
    with pytest.raises(ValueError, match="Invalid prompt name"):
        make_prompt(speech_like(2.0)[:, 0], "Hello.", codec=codec, name="../x", sample_rate=SAMPLE_RATE)
    with pytest.raises(ValueError, match="Unknown"):
        make_prompt(speech_like(2.0)[:, 0], "Hello.", language="ko", codec=codec, sample_rate=SAMPLE_RATE)


def test_cli_make_prompt_writes_a_preset_and_a_file(weights_dir, tmp_path, capsys):
    from vallex.cli import main

    audio = tmp_path / "voice.flac"
    sf.write(str(audio), speech_like(2.0, 22_050), 22_050, format="FLAC")
    presets = tmp_path / "presets"
    code = main(["make-prompt", str(audio), "--transcript", "Hello there.", "--name", "voice_1",
                 "--presets-dir", str(presets), "-o", str(tmp_path / "voice.npz"), "--weights-dir", str(weights_dir)])
    assert code == 0
    assert "language en" in capsys.readouterr().out
    assert PresetLibrary(presets).names() == ["voice_1"]
    assert (presets / "voice_1.npz").read_bytes() == (tmp_path / "voice.npz").read_bytes()
    assert main(["make-prompt", str(audio), "--transcript", "Hi.", "--name", "../x", "--presets-dir", str(presets),
                 "--weights-dir", str(weights_dir)]) == 2
    assert "Invalid prompt name" in capsys.readouterr().err
