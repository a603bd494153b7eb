"""A language you train is a language you speak: everywhere, not only through low-level functions.

A tiny model is trained for a few steps on espeak-ng speech in English and German (prepare-data, then train, as
a new user would), which grows it to four languages (en, zh, ja, de). Its German is noise, but the right text
ids (those prepare-data wrote for the same sentence) and the right language row (3, "de" in the run's
languages.json) must reach the model through the Python API, the CLI, the HTTP API and the app's handlers: the
model's own ``embed_text`` records what it is given. ``auto`` picks German only when the checkpoint knows it; the
public-shaped checkpoint still offers exactly en, zh, ja.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

from vallex.api import VallEX
from vallex.cli import main
from vallex.languages import Languages
from vallex.model import VallexModel
from vallex.prompts import VoicePrompt
from vallex.text import tokenize
from vallex.training.dataset import CodesDataset
from vallex.training.espeak_corpus import ENGLISH_SENTENCES, write_espeak_corpus
from vallex.training.trainer import TrainConfig, train
from vallex.weights import sha256_file
from vallex.weights.checkpoint import checkpoint_languages, load_model

GERMAN_SENTENCES = ("Guten Tag.", "Danke schön.", "Wie geht es dir?", "Ich trinke gern Tee.")
#: A sentence langid reads as German once German is among the candidates (and as English without it).
GERMAN_FOR_AUTO = "Guten Morgen, wie geht es dir heute?"
TRAINED = ("en", "zh", "ja", "de")
DE_ROW = 3


def few_frames(text_tokens: int, prompt_frames: int) -> tuple[int, int]:
    """The trained-for-seconds model rarely says EOS: a short, fixed budget keeps each synthesis fast."""
    return 1, 12


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """prepare-data on en/ + de/ espeak-ng recordings, then `train --model tiny` for 3 steps."""
    root = tmp_path_factory.mktemp("new-language")
    write_espeak_corpus(root / "raw", {"en": ENGLISH_SENTENCES[:3], "de": GERMAN_SENTENCES})
    assert main(["prepare-data", "--folder", str(root / "raw"), "--out", str(root / "prep"), "--random-codec",
                 "--no-progress"]) == 0
    result = train(TrainConfig(data=str(root / "prep"), out_dir=str(root / "runs" / "de"), model="tiny",
                               max_steps=3, batch_size=4, warmup_steps=1, dropout=0.0, valid_fraction=0.0,
                               log_every=1, valid_every=10_000, save_every=3, num_threads=1))
    data = CodesDataset(root / "prep")
    # What prepare-data wrote for each sentence: the ids and language rows a model trained on it reads.
    written = {item["text"]: (data[i].text.tolist(), data[i].langs.tolist()) for i, item in enumerate(data.items)}
    return {"root": root, "checkpoint": result.last_checkpoint, "written": written, "languages": data.languages}


@pytest.fixture(scope="module")
def german_tts(run: dict, tiny_weights: Path) -> VallEX:
    """The trained checkpoint, loaded in one step (EnCodec and Vocos from the random tiny weights folder)."""
    tts = VallEX.from_pretrained(tiny_weights, device="cpu", dtype="float32", checkpoint=run["checkpoint"])
    tts.frame_limits = few_frames
    return tts


@pytest.fixture()
def model_inputs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[int], list[int]]]:
    """(decoder, text ids, language ids) of every text the model embeds, in any thread (recorded by the real
    method, which then runs as usual)."""
    seen: list[tuple[str, list[int], list[int]]] = []
    embed_text = VallexModel.embed_text

    def recording(self, side, text, text_langs):
        seen.append((side, text[0].tolist(), text_langs[0].tolist()))
        return embed_text(self, side, text, text_langs)

    monkeypatch.setattr(VallexModel, "embed_text", recording)
    return seen


def ar_inputs(seen: list[tuple[str, list[int], list[int]]]) -> list[tuple[list[int], list[int]]]:
    return [(ids, rows) for side, ids, rows in seen if side == "ar"]


def test_the_run_says_which_languages_its_rows_are(run: dict) -> None:
    checkpoint = Path(run["checkpoint"])
    assert run["languages"] == list(TRAINED)
    assert json.loads((checkpoint.parent / "languages.json").read_text()) == list(TRAINED)
    assert json.loads(checkpoint.with_suffix(".json").read_text())["languages"] == list(TRAINED)
    model = load_model(checkpoint)
    assert model.config.languages == TRAINED and model.ar_language_embedding.weight.shape[0] == 4
    assert checkpoint_languages(checkpoint).codes == TRAINED  # the same answer without reading the weights


def test_python_api_speaks_german(run: dict, german_tts: VallEX, model_inputs: list) -> None:
    assert german_tts.languages.codes == TRAINED
    ids, rows = run["written"]["Guten Tag."]
    assert set(rows) == {DE_ROW}
    result = german_tts.synthesize_detailed("Guten Tag.", language="de", seed=1)
    assert ar_inputs(model_inputs) == [(ids, rows)]
    assert {side for side, _, _ in model_inputs} == {"ar", "nar"}
    assert all((i, r) == (ids, rows) for _, i, r in model_inputs)  # the NAR reads the same text
    assert result.language == "de" and len(result.waveform) > 0 and np.isfinite(result.waveform).all()

    model_inputs.clear()  # an accent is a language row like any other
    english_ids, english_rows = run["written"]["Hello there."]
    german_tts.synthesize("Hello there.", language="en", accent="de", seed=1)
    german_tts.synthesize("Guten Tag.", language="de", accent="English", seed=1)
    assert ar_inputs(model_inputs) == [(english_ids, [DE_ROW] * len(english_ids)), (ids, [0] * len(ids))]
    assert set(english_rows) == {0}


def test_a_german_prompt_with_english_text(run: dict, german_tts: VallEX, model_inputs: list,
                                           tmp_path: Path) -> None:
    prompt = german_tts.make_prompt(run["root"] / "raw" / "de" / "de-000.wav", "Guten Tag.", language="de")
    ids, _ = run["written"]["Guten Tag."]
    assert prompt.language == "de" and prompt.text_ids == ids
    prompt.save_npz(tmp_path / "de.npz")  # a language the reference format has no lang_code for
    loaded = VoicePrompt.load_npz(tmp_path / "de.npz")
    assert (loaded.language, loaded.text_ids) == ("de", ids) and torch.equal(loaded.codes, prompt.codes)
    assert loaded.to_npz_bytes() == prompt.to_npz_bytes()
    english_ids, _ = run["written"]["Hello there."]
    german_tts.synthesize("Hello there.", tmp_path / "de.npz", language="en", seed=2)
    assert ar_inputs(model_inputs) == [(ids + english_ids, [DE_ROW] * len(ids) + [0] * len(english_ids))]


def test_auto_picks_german_only_when_the_checkpoint_knows_it(german_tts: VallEX, tiny_tts: VallEX,
                                                             model_inputs: list) -> None:
    assert tokenize(GERMAN_FOR_AUTO, "auto", languages=german_tts.languages).language == "de"
    assert tokenize(GERMAN_FOR_AUTO, "auto", languages=tiny_tts.languages).language == "en"
    german_tts.synthesize(GERMAN_FOR_AUTO, language="auto", seed=0)
    [(ids, rows)] = ar_inputs(model_inputs)
    assert rows == [DE_ROW] * len(ids) and ids == tokenize(GERMAN_FOR_AUTO, "de", languages=german_tts.languages).ids
    # auto-mix and tags work for every language the model speaks, where the script allows.
    mixed = tokenize("Ich trinke gern Tee, 你好。", "auto-mix", languages=german_tts.languages)
    assert mixed.tagged_text == "[DE]Ich trinke gern Tee, [DE][ZH]你好。[ZH]"
    assert set(mixed.langs) == {"de", "zh"} and mixed.langs[0] == "de" and mixed.langs[-1] == "zh"
    tagged = tokenize("[EN]Hello.[EN][DE]Danke schön.[DE]", "mix", languages=german_tts.languages)
    assert tagged.langs == ["en"] * 7 + ["de"] * (len(tagged) - 7)


def test_cli_speaks_german(run: dict, tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                           model_inputs: list) -> None:
    out = tmp_path / "de.wav"
    common = ["--checkpoint", str(run["checkpoint"]), "--weights-dir", str(tiny_weights), "--dtype", "float32",
              "--quiet"]
    assert main(["synthesize", "--text", "Danke schön.", "--language", "de", "--seed", "3", *common,
                 "-o", str(out)]) == 0
    assert ar_inputs(model_inputs) == [run["written"]["Danke schön."]]
    assert out.stat().st_size > 44 and "language de" in capsys.readouterr().err
    code = main(["synthesize", "--text", "Bonjour.", "--language", "fr", *common, "-o", str(tmp_path / "fr.wav")])
    err = capsys.readouterr().err
    assert code == 2 and "the checkpoint speaks en, zh, ja, de" in err and not (tmp_path / "fr.wav").exists()
    # make-prompt: the checkpoint's languages are its choices too.
    prompt_file = tmp_path / "danke.npz"
    assert main(["make-prompt", str(run["root"] / "raw" / "de" / "de-001.wav"), "--transcript", "Danke schön.",
                 "--language", "de", "--checkpoint", str(run["checkpoint"]), "--weights-dir", str(tiny_weights),
                 "-o", str(prompt_file)]) == 0
    prompt = VoicePrompt.load_npz(prompt_file)
    assert (prompt.language, prompt.text_ids) == ("de", run["written"]["Danke schön."][0])


def test_http_api_speaks_german(run: dict, german_tts: VallEX, model_inputs: list) -> None:
    from vallex.serving import SpeechEngine
    from vallex.serving.http import create_api

    engine = SpeechEngine(german_tts, max_batch=2, max_queue=4)
    try:
        client = TestClient(create_api(engine, api_key=""))
        models = client.get("/v1/models").json()["data"]
        assert {tuple(model["languages"]) for model in models} == {TRAINED}
        answer = client.post("/v1/audio/speech", json={"input": "Wie geht es dir?", "language": "de", "voice": "none",
                                                       "response_format": "wav", "stream": False, "seed": 4})
        assert answer.status_code == 200, answer.text
        assert answer.content[:4] == b"RIFF" and len(answer.content) > 44
        assert ar_inputs(model_inputs) == [run["written"]["Wie geht es dir?"]]
        model_inputs.clear()
        accented = client.post("/v1/audio/speech", json={"input": "Hello there.", "language": "en", "accent": "de",
                                                         "response_format": "pcm", "stream": False})
        assert accented.status_code == 200, accented.text
        [(ids, rows)] = ar_inputs(model_inputs)
        assert ids == run["written"]["Hello there."][0] and rows == [DE_ROW] * len(ids)
        for field, value in (("language", "fr"), ("accent", "fr")):
            error = client.post("/v1/audio/speech", json={"input": "Hi.", field: value}).json()["error"]
            assert error["param"] == field and "en, zh, ja, de" in error["message"]
    finally:
        engine.close()


def test_app_speaks_german(run: dict, tiny_weights: Path, tmp_path: Path, model_inputs: list,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    import gradio as gr

    from demo.config import AppConfig
    from demo.engine import Engine
    from demo.handlers import make_handlers
    from demo.http_api import api_router
    from demo.ui import accent_choices, build_app, language_choices

    # What `VALLEX_WEIGHTS_DIR=... VALLEX_CHECKPOINT=... make app` reads.
    for name, value in (("VALLEX_WEIGHTS_DIR", tiny_weights), ("VALLEX_CHECKPOINT", run["checkpoint"]),
                        ("VALLEX_PRESETS_DIR", tmp_path / "presets"), ("VALLEX_DTYPE", "float32"),
                        ("VALLEX_THREADS", "1")):
        monkeypatch.setenv(name, str(value))
    config = AppConfig.from_env()
    assert config.checkpoint == Path(run["checkpoint"])
    engine = Engine(config)
    try:
        # The menus are the checkpoint's languages, read from its files before the model loads.
        assert engine.languages().codes == TRAINED and not engine.loaded
        assert ("German (de)", "de") in language_choices(engine.languages(), with_mix=True)
        assert [value for _, value in accent_choices(engine.languages())] == ["none", *TRAINED]
        app = build_app(config, engine)
        menus = [block for block in app.blocks.values() if getattr(block, "label", None) == "Language of the text"]
        assert menus and all("de" in [value for _, value in menu.choices] for menu in menus)
        # The title names the checkpoint's languages; the banner names the checkpoint itself.
        texts = [block.value for block in app.blocks.values() if isinstance(block, gr.Markdown)]
        assert texts[0].startswith("# VALL-E X: speak in anyone's voice, in English, 中文, 日本語 and German\n")
        banner = next(block for block in app.blocks.values() if getattr(block, "elem_id", None) == "weights-banner")
        assert banner.visible and f"{Path(run['checkpoint']).name} (SHA-256 " in banner.value
        assert "languages en, zh, ja, de" in banner.value
        engine.tts().frame_limits = few_frames
        handlers = make_handlers(engine)
        *_, (_, audio, status) = list(handlers["long_text"]("Ich trinke gern Tee.", "none", None, "fixed-prompt",
                                                            "de", "none", 5))
        assert "Done" in status and audio[0] == 24000 and len(audio[1]) > 0
        assert ar_inputs(model_inputs) == [run["written"]["Ich trinke gern Tee."]]
        api = FastAPI()
        api.include_router(api_router(engine, engine.speech))
        # (a keyless app answers loopback names only)
        models = TestClient(api, base_url="http://localhost").get("/v1/models").json()["data"]
        assert tuple(models[0]["languages"]) == TRAINED
        checkpoint = models[0]["checkpoint"]
        assert (checkpoint["file"], tuple(checkpoint["languages"])) == (Path(run["checkpoint"]).name, TRAINED)
        assert checkpoint["sha256"] == sha256_file(run["checkpoint"])[:12]  # a run's checkpoint: hashed, once
    finally:
        engine.close()


def test_public_shaped_checkpoint_still_offers_exactly_en_zh_ja(tiny_weights: Path, tiny_tts: VallEX,
                                                               tmp_path: Path) -> None:
    from demo.config import AppConfig
    from demo.engine import Engine
    from demo.ui import accent_choices, language_choices

    assert tiny_tts.languages == Languages.public() and tiny_tts.languages.codes == ("en", "zh", "ja")
    engine = Engine(AppConfig(weights_dir=tiny_weights, presets_dir=tmp_path))
    assert engine.languages().codes == ("en", "zh", "ja")
    assert [v for _, v in language_choices(engine.languages(), with_mix=True)] == ["auto", "en", "zh", "ja", "mix"]
    assert [v for _, v in accent_choices(engine.languages())] == ["none", "en", "zh", "ja"]
    with pytest.raises(ValueError, match="Unknown language 'de': this model speaks en, zh, ja"):
        tiny_tts.synthesize("Guten Tag.", language="de")
    german_prompt = VoicePrompt(codes=torch.zeros(1, 10, 8, dtype=torch.long), text_ids=[5, 6], language="de")
    with pytest.raises(ValueError, match="Unknown language 'de': this model speaks en, zh, ja"):
        tiny_tts.synthesize("Hello.", german_prompt, seed=0)


def test_a_languages_file_that_disagrees_is_one_clear_error(run: dict, tmp_path: Path) -> None:
    source = Path(run["checkpoint"])
    folder = tmp_path / "run"
    folder.mkdir()
    checkpoint = Path(shutil.copy(source, folder / source.name))
    config = json.loads(source.with_suffix(".json").read_text())
    del config["languages"]  # a checkpoint .json from before it named its languages: the run's file does
    checkpoint.with_suffix(".json").write_text(json.dumps(config))
    table = folder / "languages.json"

    table.write_text(json.dumps(list(TRAINED)))
    assert load_model(checkpoint).config.languages == TRAINED
    table.write_text(json.dumps(["en", "zh", "ja", "de", "fr"]))
    with pytest.raises(ValueError, match=r"names 5 languages \(en, zh, ja, de, fr\).* has 4 language-embedding rows"):
        load_model(checkpoint)
    with pytest.raises(ValueError, match="names 5 languages"):
        checkpoint_languages(checkpoint)
    table.write_text(json.dumps(["en", "zh", "ja", "ko"]))
    config["languages"] = list(TRAINED)
    checkpoint.with_suffix(".json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="names the rows en, zh, ja, ko.*configuration names them en, zh, ja, de"):
        load_model(checkpoint)
    table.write_text("not json")
    with pytest.raises(ValueError, match="languages.json is not valid JSON"):
        load_model(checkpoint)
    # Without any list, a grown model loads (training can resume it) but cannot be spoken with.
    table.unlink()
    del config["languages"]
    checkpoint.with_suffix(".json").write_text(json.dumps(config))
    model = load_model(checkpoint)
    assert model.config.languages is None
    with pytest.raises(ValueError, match="4 language rows but does not say which languages"):
        VallEX(model, None)
    # A .json whose list does not match its own row count.
    config["languages"] = ["en", "zh", "ja"]
    checkpoint.with_suffix(".json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="names 3 languages .* 4 language rows"):
        load_model(checkpoint)


def test_a_missing_checkpoint_is_named(tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "runs" / "checkpoint-00000009.pt"
    with pytest.raises(FileNotFoundError, match="checkpoint-00000009.pt .*does not exist"):
        VallEX.from_pretrained(tiny_weights, checkpoint=missing)
    assert main(["synthesize", "--text", "Hi.", "--checkpoint", str(missing), "--weights-dir", str(tiny_weights),
                 "-o", str(tmp_path / "x.wav")]) == 2
    assert "--checkpoint" in capsys.readouterr().err and not (tmp_path / "x.wav").exists()
