"""``vallex translate`` on tiny random VALL-E X weights, with and without the (tiny) ASR/MT models."""
from __future__ import annotations

import soundfile as sf
from test_s2st_models import scripted_whisper, speechlike, tiny_marian

from vallex.audio import save_audio
from vallex.cli import main


def _source(tmp_path, durations=(1.5, 1.5)):
    path = tmp_path / "source.wav"
    save_audio(path, speechlike(list(durations)))
    return path


def test_translate_with_user_texts_needs_no_models(tiny_weights, tmp_path, capsys):
    out = tmp_path / "out" / "translated.wav"
    code = main(["translate", str(_source(tmp_path)), "--to", "zh", "--transcript", "Nice to meet you.",
                 "--translation", "很高兴认识你。", "--weights-dir", str(tiny_weights), "--seed", "0", "-o", str(out)])
    assert code == 0
    info = sf.info(str(out))
    assert info.samplerate == 24_000 and info.channels == 1 and info.frames > 0
    err = capsys.readouterr().err
    assert "Transcript (en, user): Nice to meet you." in err
    assert "Translation (zh, user): 很高兴认识你。" in err


def test_translate_with_model_folders(tiny_weights, tmp_path, capsys):
    model, processor = scripted_whisper("zh", "你好，世界。", "Hello, world.")
    model.save_pretrained(tmp_path / "whisper")
    processor.save_pretrained(tmp_path / "whisper")
    model, tokenizer = tiny_marian(tmp_path / "marian-src")
    model.save_pretrained(tmp_path / "marian")
    tokenizer.save_pretrained(tmp_path / "marian")
    out = tmp_path / "ja.wav"
    code = main(["translate", str(_source(tmp_path)), "--to", "ja", "--asr-model", str(tmp_path / "whisper"),
                 "--mt-model", str(tmp_path / "marian"), "--weights-dir", str(tiny_weights), "--seed", "1",
                 "-o", str(out)])
    assert code == 0 and out.is_file()
    err = capsys.readouterr().err
    assert "Transcript (zh, whisper): 你好，世界。" in err
    assert "Translation (ja, " in err


def test_missing_models_exit_2_with_the_message(tiny_weights, tmp_path, capsys):
    out = tmp_path / "never.wav"
    code = main(["translate", str(_source(tmp_path)), "--to", "ja", "--asr-model", "medium",
                 "--mt-model", "facebook/nllb-200-distilled-600M", "--weights-dir", str(tiny_weights),
                 "-o", str(out)])
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert err.startswith("vallex translate: error: ")
    assert "'medium'" in err and "nllb-200-distilled-600M" in err
    assert "--translation" in err and "--mt-model" in err  # the CLI adds its own options to the library's message


def test_bad_command_lines(tiny_weights, tmp_path, capsys):
    source = _source(tmp_path)
    assert main(["translate", str(source), "--to", "zh", "--weights-dir", str(tiny_weights),
                 "-o", str(tmp_path / "out.mp3")]) == 2
    assert "must be a .wav" in capsys.readouterr().err
    assert main(["translate", str(tmp_path / "missing.wav"), "--to", "zh", "-o", str(tmp_path / "o.wav")]) == 2
    assert "No such audio file" in capsys.readouterr().err
