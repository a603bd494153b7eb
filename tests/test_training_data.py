"""prepare-data: sources, bad items, resuming, the shard format; the dataset reader, sampler and collation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from vallex.audio import load_audio
from vallex.cli import main as cli_main
from vallex.training.dataset import BucketBatchSampler, CodesDataset, collate, shard_batch, split_ids
from vallex.training.espeak_corpus import write_espeak_corpus
from vallex.training.prepare import load_index, prepare_dataset, read_recording_list, scan_folder


@pytest.fixture(scope="module")
def codec():
    from vallex.weights.random_weights import random_codec

    return random_codec(seed=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    write_espeak_corpus(root, {"en": ["Hello there.", "Good morning."], "zh": ["你好。"]})
    return root


def _sine(path, seconds: float, rate: int = 16000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)


def test_folder_round_trip(tmp_path, corpus, codec):
    items = scan_folder(corpus)
    assert [(i.id, i.language) for i in items] == [("en/en-000", "en"), ("en/en-001", "en"), ("zh/zh-000", "zh")]
    report = prepare_dataset(items, tmp_path / "out", codec, progress=False)
    assert (report.added, report.skipped_count) == (3, 0)
    data = CodesDataset(tmp_path / "out")
    assert len(data) == 3 and data.languages[:3] == ["en", "zh", "ja"]
    from vallex.text import tokenize

    for i, item in enumerate(items):
        utt = data[i]
        expected_codes = codec.encode_audio(load_audio(item.audio))[0].numpy()  # [T, 8]
        np.testing.assert_array_equal(utt.codes, expected_codes)
        tokens = tokenize(item.text, item.language)
        assert utt.text.tolist() == tokens.ids
        assert utt.langs.tolist() == [data.languages.index(lang) for lang in tokens.langs]
    # Shards are plain .npy files that memory-map without pickle.
    shard = np.load(tmp_path / "out" / "shard-00000.codes.npy", mmap_mode="r", allow_pickle=False)
    assert shard.dtype == np.int16 and shard.shape == (sum(data.frames), 8)


def test_bad_items_are_reported_and_skipped(tmp_path, corpus, codec):
    folder = tmp_path / "mixed"
    (folder / "en").mkdir(parents=True)
    for name in ("en-000", "en-001"):
        for suffix in (".wav", ".txt"):
            (folder / "en" / f"{name}{suffix}").write_bytes((corpus / "en" / f"{name}{suffix}").read_bytes())
    (folder / "en" / "no_text.wav").write_bytes((corpus / "en" / "en-000.wav").read_bytes())
    (folder / "en" / "broken.wav").write_bytes(b"RIFF this is not audio")
    (folder / "en" / "broken.txt").write_text("Hello.", encoding="utf-8")
    (folder / "en" / "empty.wav").write_bytes((corpus / "en" / "en-000.wav").read_bytes())
    (folder / "en" / "empty.txt").write_text("  \n", encoding="utf-8")
    _sine(folder / "en" / "short.wav", 0.2)
    (folder / "en" / "short.txt").write_text("Hi.", encoding="utf-8")
    _sine(folder / "en" / "long.wav", 21.0)
    (folder / "en" / "long.txt").write_text("A long one.", encoding="utf-8")

    report = prepare_dataset(scan_folder(folder), tmp_path / "out", codec, progress=False)
    assert report.added == 2
    reasons = {reason: [i for i, _ in items] for reason, items in report.skipped.items()}
    assert reasons == {"missing transcript": ["en/no_text"], "unreadable audio": ["en/broken"],
                       "empty text": ["en/empty"], "too short": ["en/short"], "too long": ["en/long"]}
    assert report.skipped_count == 5
    assert "5 skipped" in report.summary() and "too long: 1" in report.summary()
    assert [i["id"] for i in load_index(tmp_path / "out")["items"]] == ["en/en-000", "en/en-001"]


def test_rerun_is_idempotent(tmp_path, corpus, codec):
    out = tmp_path / "out"
    prepare_dataset(scan_folder(corpus), out, codec, progress=False)
    before = (out / "index.json").read_bytes()
    report = prepare_dataset(scan_folder(corpus), out, codec, progress=False)
    assert (report.added, report.already_done) == (0, 3)
    assert (out / "index.json").read_bytes() == before


class _InterruptingCodec:
    """Raises KeyboardInterrupt on the n-th encode, like a user pressing Ctrl-C."""

    def __init__(self, codec, fail_at: int) -> None:
        self.codec, self.fail_at, self.calls = codec, fail_at, 0

    def encode_audio(self, wav):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        return self.codec.encode_audio(wav)


def test_interrupted_run_resumes(tmp_path, corpus, codec):
    items = scan_folder(corpus)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(items, tmp_path / "out", _InterruptingCodec(codec, fail_at=3), shard_size=1, progress=False)
    assert len(load_index(tmp_path / "out")["items"]) == 2  # finished items were kept
    counting = _InterruptingCodec(codec, fail_at=-1)
    report = prepare_dataset(items, tmp_path / "out", counting, shard_size=1, progress=False)
    assert (report.added, report.already_done, counting.calls) == (1, 2, 1)
    prepare_dataset(items, tmp_path / "fresh", codec, progress=False)
    resumed, fresh = CodesDataset(tmp_path / "out"), CodesDataset(tmp_path / "fresh")
    for i in range(3):
        assert resumed[i].id == fresh[i].id
        np.testing.assert_array_equal(resumed[i].codes, fresh[i].codes)
        np.testing.assert_array_equal(resumed[i].text, fresh[i].text)


def test_recording_lists_csv_and_jsonl(tmp_path, corpus, codec):
    (tmp_path / "m.csv").write_text(
        "path,text,language,speaker\n"
        f"{corpus}/en/en-000.wav,Hello there.,en,alice\n"
        f"{corpus}/zh/zh-000.wav,你好。,zh,bob\n", encoding="utf-8")
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.wav").write_bytes((corpus / "en" / "en-001.wav").read_bytes())
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"path": "clips/a.wav", "text": "Good morning.", "language": "en", "id": "utt-a"}) + "\n",
        encoding="utf-8")
    csv_items = read_recording_list(tmp_path / "m.csv")
    assert [(i.language, i.speaker) for i in csv_items] == [("en", "alice"), ("zh", "bob")]
    jsonl_items = read_recording_list(tmp_path / "m.jsonl")
    assert jsonl_items[0].id == "utt-a" and jsonl_items[0].audio == tmp_path / "clips" / "a.wav"
    report = prepare_dataset(csv_items + jsonl_items, tmp_path / "out", codec, progress=False)
    assert report.added == 3
    assert [i["speaker"] for i in load_index(tmp_path / "out")["items"]] == ["alice", "bob", ""]
    with pytest.raises(ValueError, match="path"):
        (tmp_path / "bad.csv").write_text("text,language\nhi,en\n", encoding="utf-8")
        read_recording_list(tmp_path / "bad.csv")


def test_new_language_through_espeak(tmp_path, codec):
    folder = tmp_path / "de_corpus"
    write_espeak_corpus(folder, {"de": ["Guten Tag."]})
    # A transcript may name its language itself ("code|text"), here in a folder that is not a language.
    (folder / "misc").mkdir()
    (folder / "misc" / "x.wav").write_bytes((folder / "de" / "de-000.wav").read_bytes())
    (folder / "misc" / "x.txt").write_text("de|Danke schön.", encoding="utf-8")
    items = scan_folder(folder)
    assert [(i.id, i.language, i.text) for i in items] == [
        ("de/de-000", "de", "Guten Tag."), ("misc/x", "de", "Danke schön.")]
    prepare_dataset(items, tmp_path / "out", codec, progress=False)
    data = CodesDataset(tmp_path / "out")
    assert data.languages == ["en", "zh", "ja", "de"]
    assert set(data[0].langs.tolist()) == {3}
    from vallex.text import ESPEAK_SYMBOLS, EspeakFrontend

    assert data[0].text.tolist() == EspeakFrontend("de").tokenize("Guten Tag.").ids
    assert data.max_text_id < len(ESPEAK_SYMBOLS)


def test_cli_prepare_data(tmp_path, corpus, capsys):
    code = cli_main(["prepare-data", "--folder", str(corpus), "--out", str(tmp_path / "out"),
                     "--random-codec", "--no-progress"])
    assert code == 0
    assert "3 added, 0 already prepared, 0 skipped" in capsys.readouterr().out
    assert cli_main(["prepare-data", "--folder", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2


def test_cli_prepare_data_with_nothing_usable_exits_2_saying_why(tmp_path, capsys):
    """Every item skipped is no success: exit 2, one error line with the skip counts, no "Prepared data"."""
    folder = tmp_path / "unusable" / "en"
    folder.mkdir(parents=True)
    _sine(folder / "short.wav", 0.1)  # under the 0.5 s minimum
    (folder / "short.txt").write_text("Too short.", encoding="utf-8")
    _sine(folder / "long.wav", 20.5)  # over the 20 s maximum
    (folder / "long.txt").write_text("Too long.", encoding="utf-8")
    code = cli_main(["prepare-data", "--folder", str(folder.parent), "--out", str(tmp_path / "out"),
                     "--random-codec", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 2
    error_lines = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(error_lines) == 1, captured.err
    assert "Nothing was prepared: all 2 item(s) were skipped (too long: 1, too short: 1)" in error_lines[0]
    assert "Prepared data" not in captured.out and "Traceback" not in captured.err
    # A second run over items already prepared is a success, though it adds nothing.
    assert cli_main(["prepare-data", "--folder", str(tmp_path / "unusable"), "--out", str(tmp_path / "out"),
                     "--random-codec", "--no-progress", "--min-seconds", "0.05", "--max-seconds", "30"]) == 0
    assert cli_main(["prepare-data", "--folder", str(tmp_path / "unusable"), "--out", str(tmp_path / "out"),
                     "--random-codec", "--no-progress"]) == 0
    assert "0 added, 2 already prepared" in capsys.readouterr().out


@pytest.mark.parametrize("option", ["--list", "--manifest"])  # --manifest: the option's old name still works
def test_cli_prepare_data_from_a_recording_list(tmp_path, corpus, capsys, option):
    (tmp_path / "list.csv").write_text(f"path,text,language\n{corpus}/en/en-000.wav,Hello there.,en\n",
                                      encoding="utf-8")
    code = cli_main(["prepare-data", option, str(tmp_path / "list.csv"), "--out", str(tmp_path / "out"),
                     "--random-codec", "--no-progress", "--shard-size", "1"])
    assert code == 0
    assert "1 added, 0 already prepared, 0 skipped" in capsys.readouterr().out
    assert load_index(tmp_path / "out")["shards"] == ["shard-00000"]


def test_bucket_sampler():
    rng = np.random.default_rng(0)
    frames = rng.integers(40, 400, size=53).tolist()
    sampler = BucketBatchSampler(frames, batch_size=5, max_frames=1200, num_buckets=4, seed=3)
    epoch0 = sampler.batches(0)
    assert sorted(i for b in epoch0 for i in b) == list(range(53))  # every utterance exactly once
    for batch in epoch0:
        assert 1 <= len(batch) <= 5
        assert len(batch) == 1 or max(frames[i] for i in batch) * len(batch) <= 1200
    assert sampler.batches(0) == epoch0  # deterministic: every DDP rank builds the same batches
    assert sampler.batches(1) != epoch0  # reshuffled per epoch
    # Buckets keep similar durations together: the spread inside a batch is far below the global spread.
    spread = np.mean([max(frames[i] for i in b) - min(frames[i] for i in b) for b in epoch0])
    assert spread < 0.5 * (max(frames) - min(frames))
    batch = epoch0[0]
    assert sorted(shard_batch(batch, 0, 2) + shard_batch(batch, 1, 2)) == sorted(batch)


def test_split_is_stable():
    ids = [f"utt{i}" for i in range(400)]
    train, valid = split_ids(ids, 0.1)
    assert 20 < len(valid) < 60 and not set(train) & set(valid) and len(train) + len(valid) == 400
    assert split_ids(ids + ["new"], 0.1)[1][: len(valid)] == valid  # adding data keeps the split


def test_collate_pads():
    from vallex.training.dataset import Utterance

    a = Utterance("a", np.array([5, 6, 7]), np.array([0, 0, 1]), np.ones((4, 8), dtype=np.int64))
    b = Utterance("b", np.array([9]), np.array([2]), np.full((2, 8), 3, dtype=np.int64))
    batch = collate([a, b])
    assert batch.text.tolist() == [[5, 6, 7], [9, 0, 0]]
    assert batch.text_langs.tolist() == [[0, 0, 1], [2, 0, 0]]
    assert batch.codes.shape == (2, 4, 8) and batch.codes[1, 2:].abs().sum() == 0
    assert batch.text_lens.tolist() == [3, 1] and batch.code_lens.tolist() == [4, 2]
    assert batch.codes.dtype == torch.long


def test_folder_language_sources(tmp_path, corpus):
    wav = (corpus / "en" / "en-000.wav").read_bytes()
    for rel, text in [("wav/a", "Hello."), ("de/b", "Hallo."), ("wav/c", "ja|こんにちは。")]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"{rel}.wav").write_bytes(wav)
        (tmp_path / f"{rel}.txt").write_text(text, encoding="utf-8")
    # "wav/" is not a language, so --language applies; "de/" is; a "ja|" prefix wins over both.
    assert [(i.id, i.language) for i in scan_folder(tmp_path, language="en")] == [
        ("de/b", "de"), ("wav/a", "en"), ("wav/c", "ja")]
    assert [i.language for i in scan_folder(tmp_path)] == ["de", None, "ja"]


def test_voice_prompts_become_a_training_set(tmp_path):
    from vallex.prompts import VoicePrompt
    from vallex.training.prepare import prepare_prompts

    rng = np.random.default_rng(0)
    prompts = [VoicePrompt(torch.from_numpy(rng.integers(0, 1024, (1, frames, 8))), ids, language, name=name)
               for name, frames, ids, language in (("a", 90, [5, 6, 7], "en"), ("b", 40, [8, 9], "zh"),
                                                   ("c", 60, [10], "ja"))]
    report = prepare_prompts(prompts[:2], tmp_path / "out", shard_size=1)
    assert (report.added, report.already_done) == (2, 0)
    report = prepare_prompts(prompts, tmp_path / "out")  # resumable: only "c" is new
    assert (report.added, report.already_done) == (1, 2)
    data = CodesDataset(tmp_path / "out")
    assert [item["id"] for item in data.items] == ["a", "b", "c"] and data.frames == [90, 40, 60]
    for i, prompt in enumerate(prompts):
        utt = data[i]
        np.testing.assert_array_equal(utt.codes, prompt.codes[0].numpy())
        assert utt.text.tolist() == prompt.text_ids
        assert utt.langs.tolist() == [data.languages.index(prompt.language)] * len(prompt.text_ids)
    assert data.items[0]["seconds"] == pytest.approx(90 / 75)
    with pytest.raises(ValueError, match="name of its own"):
        prepare_prompts([prompts[0], prompts[0]], tmp_path / "twice")
    with pytest.raises(ValueError, match="name of its own"):
        prepare_prompts([VoicePrompt(prompts[0].codes, [5], "en")], tmp_path / "nameless")
