"""`vallex eval` end to end: random tiny weights, espeak-ng prompts, real scorers (nothing mocked)."""
from __future__ import annotations

import csv
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vallex.cli import main
from vallex.evaluation.asr import bundled_tiny_en
from vallex.evaluation.error_rate import error_counts

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng (Debian package) not installed")

#: Every column the CSV must have, in order (written down here, not read from the code under test).
EXPECTED_COLUMNS = [
    "id", "direction", "prompt_language", "language", "metric", "text", "asr_text", "errors", "ref_tokens",
    "error_rate", "reference_error_rate", "sim_prompt", "sim_prompt_wavlm", "sim_reference", "duration_s",
    "synth_s", "rtf", "prompt_audio", "reference_audio", "output_audio", "notes",
]
EN_PROMPT = "Please call Stella and ask her to bring these things."
ZH_PROMPT = "我们一起去公园散步吧。"


def espeak_file(path: Path, voice: str, text: str, *options: str) -> Path:
    subprocess.run(["espeak-ng", "-v", voice, *options, "-w", str(path), text], check=True, capture_output=True)
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    espeak_file(root / "prompt_en.wav", "en+m3", EN_PROMPT)
    espeak_file(root / "prompt_zh.wav", "cmn", ZH_PROMPT)
    espeak_file(root / "gt_hello.wav", "en+m3", "Good morning, how are you today?")
    speech, rate = sf.read(root / "prompt_en.wav", dtype="float32")
    sf.write(root / "prompt_20s.wav", np.tile(speech, int(np.ceil(20 * rate / len(speech)))), rate)  # > 15 s
    return root


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    from vallex.weights.random_weights import make_random_weights

    directory = tmp_path_factory.mktemp("weights")
    make_random_weights(directory, size="tiny")
    return directory


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_eval_on_random_weights_writes_every_column(workspace, tiny_weights, tmp_path, capsys):
    eval_list = write_jsonl(workspace / "cross.jsonl", [
        {"id": "en_en", "prompt_audio": "prompt_en.wav", "prompt_text": EN_PROMPT,
         "text": "Good morning, how are you today?", "language": "en", "reference_audio": "gt_hello.wav"},
        {"id": "zh_en", "prompt_audio": "prompt_zh.wav", "prompt_text": ZH_PROMPT, "prompt_language": "zh",
         "text": "Hello world.", "language": "en"},
        {"id": "en_zh", "prompt_audio": str(workspace / "prompt_en.wav"), "prompt_text": EN_PROMPT,
         "text": "你好，世界。", "language": "zh"},
        {"id": "long_prompt", "prompt_audio": "prompt_20s.wav", "prompt_text": EN_PROMPT, "text": "Hi.",
         "language": "en", "prompt_language": "en"},
    ])
    out = tmp_path / "report"
    code = main(["eval", str(eval_list), "--weights-dir", str(tiny_weights), "--out", str(out), "--asr", "none",
                 "--device", "cpu", "--threads", "1", "--quiet", "--seed", "3"])
    assert code == 0
    columns, rows = read_csv(out / "results.csv")
    assert columns == EXPECTED_COLUMNS
    assert [r["id"] for r in rows] == ["en_en", "zh_en", "en_zh", "long_prompt"]
    assert [r["direction"] for r in rows] == ["en->en", "zh->en", "en->zh", "en->en"]
    assert [r["metric"] for r in rows] == ["wer", "wer", "cer", "wer"]
    failed = rows.pop()  # a 20 s prompt cannot be used: the line fails, the run goes on
    assert failed["notes"].startswith("synthesis failed:") and "15" in failed["notes"]
    assert failed["output_audio"] == failed["duration_s"] == failed["sim_prompt"] == failed["rtf"] == ""
    for row in rows:
        assert -1.0 <= float(row["sim_prompt"]) <= 1.0
        audio, rate = sf.read(row["output_audio"], dtype="float32")
        assert rate == 24_000
        assert float(row["duration_s"]) == pytest.approx(len(audio) / 24_000, abs=1e-5) and len(audio) > 0
        assert float(row["rtf"]) == pytest.approx(float(row["synth_s"]) / float(row["duration_s"]), rel=1e-4)
        for empty in ("asr_text", "errors", "ref_tokens", "error_rate", "reference_error_rate", "sim_prompt_wavlm"):
            assert row[empty] == "", empty
    assert rows[0]["sim_reference"] != "" and rows[1]["sim_reference"] == ""

    document = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert document["info"]["seed"] == 3 and "RANDOM" in document["info"]["weights"]
    unavailable = document["info"]["unavailable"]
    assert unavailable["error_rate"] == unavailable["asr_text"] == "ASR disabled (--asr none)"
    assert "WavLM" in unavailable["sim_prompt_wavlm"] and "not on disk" in unavailable["sim_prompt_wavlm"]
    groups = {g["group"]: g for g in document["aggregate"]}
    assert set(groups) == {"all", "lang=en", "lang=zh", "en->en", "zh->en", "en->zh"}
    assert (groups["all"]["lines"], groups["all"]["lines_failed"]) == (4, 1)
    assert (groups["lang=en"]["lines"], groups["en->en"]["lines_failed"], groups["zh->en"]["lines_failed"]) == (3, 1, 0)
    sims = [float(r["sim_prompt"]) for r in rows]
    assert groups["all"]["sim_prompt_mean"] == pytest.approx(np.mean(sims), abs=1e-5)
    synth, duration = sum(float(r["synth_s"]) for r in rows), sum(float(r["duration_s"]) for r in rows)
    assert groups["all"]["rtf_overall"] == pytest.approx(synth / duration, rel=1e-4)
    assert groups["all"]["error_rate_pooled"] is None and groups["all"]["metric"] == "cer+wer"

    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "## Empty columns" in markdown and "`error_rate`: ASR disabled (--asr none)" in markdown
    assert "| zh->en | 1 | 0 | wer |" in markdown
    assert markdown in capsys.readouterr().out


def test_eval_of_given_audio_with_asr_and_wavlm(workspace, tmp_path):
    """--synthesized-dir: espeak-ng speech of the texts stands in for a model's output."""
    if importlib.util.find_spec("transformers") is None:
        pytest.fail("transformers is not installed: make test installs it (requirements-dev.txt)")
    import torch

    from vallex.optional_models import import_transformers

    transformers = import_transformers()  # through the torchaudio guard (CPU torch)

    texts = {"coffee": "I would like a cup of coffee, please.", "morning": "Good morning, how are you today?"}
    given = tmp_path / "given"
    given.mkdir()
    for item_id, text in texts.items():
        espeak_file(given / f"{item_id}.wav", "en+m3", text)
    espeak_file(given / "zh.wav", "cmn", "你好世界")
    espeak_file(given / "other_voice.wav", "en+f2", texts["coffee"], "-p", "80")  # not the prompt's voice
    records = [{"id": k, "prompt_audio": "prompt_en.wav", "prompt_text": EN_PROMPT, "text": t, "language": "en"}
               for k, t in texts.items()]
    records.append({"id": "zh", "prompt_audio": "prompt_zh.wav", "prompt_text": ZH_PROMPT, "text": "你好世界",
                    "language": "zh"})
    records.append({"id": "other_voice", "prompt_audio": "prompt_en.wav", "prompt_text": EN_PROMPT,
                    "text": texts["coffee"], "language": "en"})
    records.append({"id": "absent", "prompt_audio": "prompt_en.wav", "prompt_text": EN_PROMPT, "text": "Missing.",
                    "language": "en"})
    eval_list = write_jsonl(workspace / "given.jsonl", records)

    # A random WavLM x-vector model saved the way a downloaded one is: exercises the optional verifier's code.
    torch.manual_seed(0)
    config = transformers.WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                                      num_conv_pos_embedding_groups=2, tdnn_dim=(32, 32, 32, 32, 64),
                                      xvector_output_dim=16, num_buckets=32, max_bucket_distance=100)
    wavlm_dir = tmp_path / "wavlm"
    transformers.WavLMForXVector(config).save_pretrained(wavlm_dir)
    transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16_000, padding_value=0.0,
                                          do_normalize=True, return_attention_mask=True).save_pretrained(wavlm_dir)

    out = tmp_path / "report"
    code = main(["eval", str(eval_list), "--synthesized-dir", str(given), "--out", str(out), "--asr", "auto",
                 "--wavlm", str(wavlm_dir), "--quiet"])
    assert code == 0
    columns, rows = read_csv(out / "results.csv")
    assert columns == EXPECTED_COLUMNS
    by_id = {r["id"]: r for r in rows}
    for item_id in ("coffee", "morning", "zh", "other_voice"):
        row = by_id[item_id]
        assert row["synth_s"] == row["rtf"] == ""
        assert -1.0 <= float(row["sim_prompt_wavlm"]) <= 1.0
        assert float(row["duration_s"]) > 1.0
    assert "no synthesised file absent.wav" in by_id["absent"]["notes"]
    assert by_id["absent"]["sim_prompt"] == by_id["absent"]["duration_s"] == ""
    document = json.loads((out / "results.json").read_text(encoding="utf-8"))
    info = document["info"]
    groups = {g["group"]: g for g in document["aggregate"]}
    assert (groups["all"]["lines"], groups["all"]["lines_failed"]) == (5, 1)
    assert info["unavailable"]["rtf"].startswith("audio was given")
    # The prompt's voice (espeak en+m3) scores clearly above another voice saying the same sentence.
    assert float(by_id["coffee"]["sim_prompt"]) > float(by_id["other_voice"]["sim_prompt"]) + 0.05

    if info["asr"] is None:  # no Whisper model on this machine: empty columns, reason stated
        assert all(r["asr_text"] == "" and r["error_rate"] == "" for r in rows)
        assert info["unavailable"]["error_rate"] and info["asr_note"]
        return
    for item_id, text in texts.items():  # clear synthetic English: a few words wrong at most
        row = by_id[item_id]
        counts = error_counts(text, row["asr_text"], "en")
        assert int(row["errors"]) == counts.errors and int(row["ref_tokens"]) == counts.reference_length
        assert float(row["error_rate"]) == pytest.approx(counts.rate, abs=1e-6)
        assert counts.rate <= 0.25, row["asr_text"]
    if bundled_tiny_en() is not None and "tiny.en" in info["asr"]:
        assert "English-only" in by_id["zh"]["notes"] and by_id["zh"]["error_rate"] == ""


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"prompt_audio": "p.wav", "prompt_text": "Hi there.", "text": "Hello.", "language": "en"}',
          '{"prompt_audio": "p.wav", "text": '], r"line 2: not valid JSON"),
        (['{"prompt_audio": "p.wav", "prompt_text": "Hi there.", "language": "en"}'],
         r"line 1: missing field\(s\) 'text'"),
        (['', '{"prompt_audio": "p.wav", "prompt_text": "Hi.", "text": "Hello.", "language": "fr"}'],
         r"line 2: field 'language' is 'fr'; expected one of en, zh, ja"),
        (['{"prompt_audio": "nope.wav", "prompt_text": "Hi.", "text": "Hello.", "language": "en"}'],
         r"line 1: field 'prompt_audio': audio file .*nope.wav does not exist"),
        (['{"prompt_audio": "p.wav", "prompt_txt": "Hi.", "text": "Hello.", "language": "en"}'],
         r"line 1: missing field\(s\) 'prompt_text'"),
        (['{"prompt_audio": "p.wav", "prompt_text": "Hi.", "text": "Hello.", "language": "en", "lang": "en"}'],
         r"line 1: unknown field\(s\) 'lang'"),
        (['{"id": "../x", "prompt_audio": "p.wav", "prompt_text": "Hi.", "text": "Hello.", "language": "en"}'],
         r"line 1: field 'id' is '../x'"),
        (['{"id": "a", "prompt_audio": "p.wav", "prompt_text": "Hi.", "text": "Hello.", "language": "en"}',
          '{"id": "a", "prompt_audio": "p.wav", "prompt_text": "Hi.", "text": "Hi.", "language": "en"}'],
         r"line 2: id 'a' is already used on line 1"),
        (['{"prompt_audio": "p.wav", "prompt_text": "  ", "text": "Hello.", "language": "en"}'],
         r"line 1: field 'prompt_text' must be a non-empty string"),
        (['["p.wav", "Hi.", "Hello.", "en"]'], r"line 1: expected a JSON object, got list"),
    ],
)
def test_bad_eval_list_gives_line_and_field(tmp_path, capsys, lines, message):
    espeak_file(tmp_path / "p.wav", "en", "Hi there.")
    eval_list = tmp_path / "bad.jsonl"
    eval_list.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # No weights exist in this folder: the list must be refused before any model is looked for.
    code = main(["eval", str(eval_list), "--weights-dir", str(tmp_path / "no-weights"), "--out", str(tmp_path / "o")])
    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith("vallex eval: error: ") and str(eval_list) in error
    assert re.search(message, error), error
    assert not (tmp_path / "o").exists()


def test_seedtts_list_is_read_with_its_language(tmp_path, capsys):
    espeak_file(tmp_path / "p.wav", "en", "Hi there.")
    (tmp_path / "gt.wav").write_bytes((tmp_path / "p.wav").read_bytes())
    lst = tmp_path / "meta.lst"
    lst.write_text("utt1|Hi there.|p.wav|Hello world.\nutt2|Hi there.|p.wav|Good night.|gt.wav\n", encoding="utf-8")
    from vallex.evaluation import read_eval_list

    items = read_eval_list(lst, "en")
    assert [(i.id, i.text, i.language) for i in items] == [("utt1", "Hello world.", "en"),
                                                            ("utt2", "Good night.", "en")]
    assert items[0].reference_audio is None and items[1].reference_audio == tmp_path / "gt.wav"
    assert items[0].prompt_audio == tmp_path / "p.wav"
    assert main(["eval", str(lst), "--out", str(tmp_path / "o")]) == 2
    assert "pass --language" in capsys.readouterr().err
    lst.write_text("utt1|Hi there.|p.wav\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 1: expected 4 or 5 '\|'-separated fields"):
        read_eval_list(lst, "en")


def test_missing_asr_gives_a_reason_not_a_crash(tmp_path):
    from vallex.evaluation.asr import load_asr

    assert load_asr("none") == (None, "ASR disabled (--asr none)")
    engine, reason = load_asr("auto", model=str(tmp_path / "no-such-whisper"))
    missing = tmp_path / "no-such-whisper"
    assert engine is None and reason.startswith(f"no ASR available: Speech-recognition model {missing} does not exist")
    engine, reason = load_asr("auto", model="no-such-size")
    assert engine is None and reason.startswith("no ASR available: ")
    if importlib.util.find_spec("faster_whisper") is not None:
        assert "Whisper model 'no-such-size' (faster-whisper) is not on disk (downloading was not allowed)" in reason
    assert "openai-whisper" in reason
    with pytest.raises(ValueError, match="auto, none, faster-whisper, openai-whisper"):
        load_asr("wav2vec")


def test_eval_compares_decoding_settings(workspace, tiny_weights, tmp_path, capsys, synthesis_calls):
    seen = synthesis_calls
    eval_list = write_jsonl(workspace / "one.jsonl", [
        {"id": "en_en", "prompt_audio": "prompt_en.wav", "prompt_text": EN_PROMPT, "text": "Good morning.",
         "language": "en"}])
    common = [str(eval_list), "--asr", "none", "--wavlm", "none", "--device", "cpu", "--threads", "1", "--quiet"]
    assert main(["eval", *common, "--out", str(tmp_path / "a"), "--weights-dir", str(tiny_weights),
                 "--top-p", "0.8", "--ras", "--length-guards"]) == 0
    assert seen[-1] == {"language": "en", "seed": 0, "top_p": 0.8, "ras": True, "length_guards": True}
    assert "- decoding: top_p=0.8, ras=True, length_guards=True" in (tmp_path / "a" / "report.md").read_text(
        encoding="utf-8")
    capsys.readouterr()
    assert main(["eval", *common, "--out", str(tmp_path / "b"), "--synthesized-dir", str(workspace), "--ras"]) == 2
    assert "need synthesis: leave out --synthesized-dir" in capsys.readouterr().err
    assert main(["eval", *common, "--out", str(tmp_path / "c"), "--weights-dir", str(tiny_weights),
                 "--best-of", "0"]) == 2
    assert "--best-of must be a whole number from 1 to 16, got 0." in capsys.readouterr().err
    assert len(seen) == 1
