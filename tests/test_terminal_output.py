"""What a user sees on stderr: the random-weights warning in one line at the user's call, no third-party
deprecation noise from jieba, and progress bars that stay quiet when stderr is a file or a pipe."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

from vallex.progress import progress_bar
from vallex.weights import RandomWeightsWarning, resolve_weights

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """A fresh Python with Python's default warning filters (none of pytest's), stderr captured: not a TTY."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_synthesize_with_stderr_to_a_file_prints_a_few_clean_lines(tiny_weights, tmp_path):
    """Mandarin text (jieba's first import) with progress bars on (no --quiet): one line per message."""
    out = tmp_path / "out.wav"
    result = _run(["-m", "vallex", "synthesize", "--text", "你好。", "--weights-dir", str(tiny_weights),
                   "--seed", "1", "--threads", "1", "-o", str(out)], tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.replace("\r", "\n").splitlines()
    assert len(lines) <= 3, result.stderr  # the noise warning, perhaps a length-limit warning; no bar redraws
    noise = [line for line in lines if "RANDOM weights" in line]
    assert noise == [f"Warning: These are RANDOM weights for development and tests: every output made with them "
                     f"is noise, not speech. ({tiny_weights})"]
    assert "warnings.warn(" not in result.stderr and "manager.py" not in result.stderr
    assert "pkg_resources" not in result.stderr and "AR steps" not in result.stderr
    assert out.is_file()


def test_the_library_warning_names_the_callers_line(tiny_weights):
    """In Python, the warning points at the user's own line (this test), not at the library's warnings.warn."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resolve_weights(tiny_weights, download=False)
    noise = [w for w in caught if issubclass(w.category, RandomWeightsWarning)]
    assert len(noise) == 1 and noise[0].filename == __file__, [(w.filename, w.lineno) for w in noise]


def test_jieba_imports_without_a_warning(tmp_path):
    """jieba imports setuptools' deprecated pkg_resources; that warning is silenced where jieba is imported."""
    result = _run(["-W", "always", "-c", "from vallex.text.mandarin import _jieba; _jieba()"], tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _draw(stream: io.StringIO, monkeypatch, fine: bool = False) -> str:
    monkeypatch.setattr(sys, "stderr", stream)
    bar = progress_bar(total=200, desc="steps", fine=fine)
    for _ in range(200):
        bar.update(1)
    bar.close()
    return stream.getvalue()


def test_progress_bars_are_quiet_unless_stderr_is_a_terminal(monkeypatch):
    assert _draw(io.StringIO(), monkeypatch) == ""  # a short job in a log: nothing
    assert _draw(io.StringIO(), monkeypatch, fine=True) == ""
    assert "200/200" in _draw(_Terminal(), monkeypatch)  # on a terminal, the bar as ever
    assert "200/200" in _draw(_Terminal(), monkeypatch, fine=True)
