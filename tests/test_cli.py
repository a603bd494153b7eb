"""The ``vallex`` command line: synthesize, convert-checkpoint, serve, help, and exit codes on bad input."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from vallex.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def test_every_command_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps them here
    assert {"synthesize", "make-prompt", "download", "make-random-weights", "convert-checkpoint"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: vallex " + name in capsys.readouterr().out


def test_synthesize_writes_a_wav(tiny_weights, tmp_path):
    out = tmp_path / "out.wav"
    code = main(["synthesize", "--text", "Hello there.", "--weights-dir", str(tiny_weights), "--seed", "1",
                 "--quiet", "-o", str(out)])
    assert code == 0
    wav, sr = sf.read(out, dtype="float32")
    assert sr == 24000 and len(wav) > 0 and np.isfinite(wav).all()


def test_synthesize_with_prompt_audio_cross_lingual_accent(tiny_weights, tmp_path):
    prompt = tmp_path / "voice.wav"
    sf.write(prompt, (0.1 * np.random.default_rng(1).standard_normal(48000)).astype(np.float32), 24000)
    text_file = tmp_path / "text.txt"
    text_file.write_text("你好。再见。", encoding="utf-8")
    out = tmp_path / "out.wav"
    code = main(["synthesize", "--text-file", str(text_file), "--prompt-audio", str(prompt), "--prompt-text",
                 "Nice to meet you.", "--accent", "en", "--long-text", "sliding-window",
                 "--weights-dir", str(tiny_weights), "--seed", "2", "--quiet", "-o", str(out)])
    assert code == 0 and out.stat().st_size > 44


@pytest.mark.parametrize("extra, message", [
    (["--text", ""], "empty"),
    (["--text", "Hi.", "--preset", "nobody"], "preset"),
    (["--text", "Hi.", "--preset", "../../etc/passwd"], "name"),
    (["--text", "This is long enough to need several sentences. " * 20], "long-text"),
    (["--text", "Hi.", "--prompt-text", "orphan transcript"], "--prompt-audio"),
])
def test_bad_input_exits_2_with_one_line_and_no_output(tiny_weights, tmp_path, capsys, extra, message):
    out = tmp_path / "out.wav"
    code = main(["synthesize", *extra, "--weights-dir", str(tiny_weights), "--presets-dir", str(tmp_path),
                 "--quiet", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not out.exists()
    assert list(tmp_path.glob("*.wav")) == []  # no partial temporary file either


def test_unknown_language_is_refused_naming_the_checkpoint_languages(tiny_weights, tmp_path, capsys):
    """Before any model loads: the choices are the checkpoint's languages (the public-shaped one: en, zh, ja)."""
    out = tmp_path / "x.wav"
    for option, value in (("--language", "fr"), ("--language", "de"), ("--accent", "de")):
        code = main(["synthesize", "--text", "Hi", option, value, "--weights-dir", str(tiny_weights), "-o", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and f"{option} {value!r}" in err and "speaks en, zh, ja" in err, err
        assert "Traceback" not in err and not out.exists()


def test_convert_checkpoint_round_trip(golden, tmp_path):
    from vallex.config import VallexConfig
    from vallex.weights.checkpoint import load_model

    target = tmp_path / "model.safetensors"
    assert main(["convert-checkpoint", str(golden / "checkpoint.pt"), str(target),
                 "--config", str(golden / "config.json")]) == 0
    converted = load_model(target)  # the config travels in the safetensors metadata
    original = load_model(golden / "checkpoint.pt", VallexConfig.from_json(golden / "config.json"))
    for key, value in original.state_dict().items():
        assert torch.equal(value, converted.state_dict()[key]), key
    assert converted.nar_predict_layers[0].weight is converted.nar_audio_embeddings[2].word_embeddings.weight


def test_console_script_runs_offline(tiny_weights, tmp_path):
    """The installed entry point, in a fresh process, as a user would run it."""
    out = tmp_path / "cli.wav"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "vallex", "synthesize", "--text", "Hi.", "--weights-dir",
                             str(tiny_weights), "--threads", "1", "--quiet", "-o", str(out)],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert out.is_file()


def run_with_size_limit(argv: list[str], limit: int) -> subprocess.CompletedProcess:
    """``vallex ARGV`` in a fresh process whose files may not grow past ``limit`` bytes (RLIMIT_FSIZE): its
    writes fail as on a full disk (EFBIG; Python ignores SIGXFSZ), with no privileges needed."""
    code = ("import resource, sys; from vallex.cli import main; "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.getrlimit(resource.RLIMIT_FSIZE)[1])); "
            "sys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO)), timeout=300)


def error_lines(stderr: str) -> list[str]:
    """The error lines of ``stderr`` (the random weights' noise warning aside), after checking that it holds no
    traceback and ends with them."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.strip().splitlines() if ": error: " in line]
    assert stderr.strip().endswith(lines[-1]), stderr
    return lines


@pytest.mark.skipif(sys.platform == "win32", reason="file size limits are POSIX")
def test_a_refused_output_is_one_line_exit_2_and_no_partial_file(tiny_weights, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "speech.wav"
    result = run_with_size_limit(["synthesize", "--text", "Hello there.", "--weights-dir", str(tiny_weights),
                                  "--seed", "1", "--threads", "1", "--quiet", "-o", str(out)], 2048)
    assert result.returncode == 2, result.stderr
    assert error_lines(result.stderr) == [
        f"vallex synthesize: error: Could not write {out}: the file grew past the largest file allowed (the "
        "process's file size limit, ulimit -f, or the file system's). No partial file was left."]
    assert list(out_dir.iterdir()) == []

    weights = tmp_path / "weights"  # torch.save's own error (inline_container), the same line
    result = run_with_size_limit(["make-random-weights", str(weights)], 64 * 1024)
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"vallex make-random-weights: error: Could not write {weights}/")
    assert "file size limit" in lines[0] and ".partial" not in lines[0]
    assert list(weights.iterdir()) == []  # the files come as a set or not at all: no half-made weights folder

    blocked = tmp_path / "a-file"  # its folder cannot be made: one line too
    blocked.write_text("not a folder")
    code = main(["synthesize", "--text", "Hi.", "--weights-dir", str(tiny_weights), "--quiet", "--threads", "1",
                 "-o", str(blocked / "speech.wav")])
    assert code == 2


def test_missing_weights_is_a_clear_error(tmp_path, capsys):
    code = main(["synthesize", "--text", "Hi.", "--weights-dir", str(tmp_path / "empty"), "--quiet",
                 "-o", str(tmp_path / "o.wav")])
    err = capsys.readouterr().err
    assert code == 2 and "vallex-checkpoint" in err and "Traceback" not in err


def test_serve_help_lists_its_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    for option in ("--host", "--port", "--weights-dir", "--device", "--dtype", "--threads", "--max-batch",
                   "--max-queue", "--api-key", "--presets-dir", "--default-voice", "--max-request-work",
                   "--stream-timeout"):
        assert option in out, option


def test_serve_without_weights_is_a_clear_error(tmp_path, capsys):
    code = main(["serve", "--weights-dir", str(tmp_path / "empty"), "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith("vallex serve: error: 4 model file(s) not found") and "vallex-checkpoint" in err


@pytest.mark.parametrize("extra, message", [
    (["--port", "70000"], "--port"),
    (["--max-batch", "0"], "--max-batch"),
    (["--max-request-work", "-1"], "--max-request-work must be >= 1, or 0 for no limit"),
    (["--stream-timeout", "0"], "--stream-timeout must be > 0 seconds"),
    (["--api-key", "two words"], "printable ASCII"),
    (["--default-voice", "nobody"], "not a preset"),
])
def test_serve_checks_its_settings_before_loading(tmp_path, capsys, extra, message):
    code = main(["serve", "--weights-dir", str(tmp_path / "empty"), "--presets-dir", str(tmp_path), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "model file" not in err  # failed before looking for weights


def test_serve_help_lists_the_ray_options(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "pip install 'vallex[serve]'" in out
    for option in ("--ray", "--ray-address", "--replicas", "--min-replicas", "--max-replicas", "--target-ongoing",
                   "--upscale-delay", "--downscale-delay", "--replica-cpus", "--replica-gpus", "--proxy-location"):
        assert option in out, option


@pytest.mark.parametrize("extra, message", [
    (["--replicas", "2"], "--replicas needs --ray"),
    (["--max-replicas", "3"], "--max-replicas needs --ray"),
    (["--ray", "--replicas", "2", "--max-replicas", "3"], "--replicas is a fixed number"),
    (["--ray", "--replicas", "0"], "--replicas must be >= 1"),
    (["--ray", "--port", "0"], "--port 0 is not possible with --ray"),
    (["--ray", "--min-replicas", "5", "--max-replicas", "2"], "min_replicas <= max_replicas"),
    (["--ray", "--device", "cuda"], "--device cuda needs --replica-gpus"),
    (["--ray", "--device", "CUDA:0", "--replica-gpus", "0"], "--device cuda needs --replica-gpus"),
    (["--ray", "--device", "cpu", "--replica-gpus", "1"], "reserve GPUs they never use"),
    (["--ray", "--device", "cuda:1", "--replica-gpus", "1"], "numbered from 0"),
])
def test_serve_ray_options_are_checked_first(tmp_path, capsys, extra, message):
    code = main(["serve", "--weights-dir", str(tmp_path / "empty"), "--presets-dir", str(tmp_path), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_serve_synthesize_and_the_app_default_to_the_same_precision():
    from demo.config import AppConfig
    from vallex.cli import build_parser

    parser = build_parser()
    serve = parser.parse_args(["serve"])
    synthesize = parser.parse_args(["synthesize", "--text", "Hi.", "-o", "x.wav"])
    assert serve.dtype == synthesize.dtype == AppConfig().dtype == "auto"


def test_serve_ray_without_ray_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code = main(["serve", "--ray", "--weights-dir", str(tmp_path / "empty"), "--presets-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("vallex serve: error: Ray Serve is not installed") and "pip install 'vallex[serve]'" in err


def test_serve_ray_checks_the_weights_before_starting_ray(tmp_path, capsys):
    import ray

    code = main(["serve", "--ray", "--weights-dir", str(tmp_path / "empty"), "--presets-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("vallex serve: error: 4 model file(s) not found")
    assert not ray.is_initialized()


def test_serve_runs_the_http_api(tiny_weights, tmp_path):
    """`vallex serve` in a fresh process: the model loads once, the API answers with the key it was given."""
    import io
    import socket
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1", VALLEX_API_KEY="from-env")
    with open(tmp_path / "serve.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "vallex", "serve", "--weights-dir", str(tiny_weights),
                                    "--presets-dir", str(tmp_path), "--port", str(port), "--threads", "1",
                                    "--log-level", "warning"], cwd=REPO, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                health = httpx.get(f"{url}/health", timeout=5)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("vallex serve did not start:\n" + (tmp_path / "serve.log").read_text()[-3000:])
                time.sleep(0.2)
        assert health.json()["model_loaded"] is True and health.json()["auth_required"] is True
        checkpoint = health.json()["checkpoint"]
        assert (checkpoint["file"], checkpoint["random"]) == ("vallex-checkpoint.pt", True)
        body = {"model": "tts-1", "input": "Hi.", "voice": "alloy", "response_format": "wav", "seed": 1}
        assert httpx.post(f"{url}/v1/audio/speech", json=body, timeout=120).status_code == 401
        response = httpx.post(f"{url}/v1/audio/speech", json=body, timeout=120,
                              headers={"Authorization": "Bearer from-env"})
        assert response.status_code == 200, response.text
        wav, sr = sf.read(io.BytesIO(response.content), dtype="float32")
        assert sr == 24000 and len(wav) > 0 and np.isfinite(wav).all()
    finally:
        process.terminate()
        process.wait(timeout=30)
    started = (tmp_path / "serve.log").read_text()
    assert (f"/v1/audio/speech (API key required; presets: {tmp_path}; model: vallex-checkpoint.pt (SHA-256 "
            f"{checkpoint['sha256']}; languages en, zh, ja; RANDOM weights: outputs are noise)).") in started
