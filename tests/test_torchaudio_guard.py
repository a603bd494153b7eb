"""The torchaudio guard engages only when the native extension fails to load."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, extra_path: Path | None = None) -> str:
    paths = [str(REPO)] + ([str(extra_path)] if extra_path else [])
    prelude = f"import sys; sys.path[:0] = {paths!r}\n"
    result = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_real_torchaudio_imports_and_resamples():
    out = run_python("""
        from vallex.audio._torchaudio_guard import ensure_torchaudio
        import torch
        ta = ensure_torchaudio()
        import encodec, vocos  # both import torchaudio themselves
        y = ta.functional.resample(torch.ones(1, 160), 16000, 24000)
        mel = ta.transforms.MelSpectrogram(sample_rate=24000)(torch.randn(1, 2400))
        print(tuple(y.shape), mel.ndim)
    """)
    assert out.splitlines()[-1] == "(1, 240) 3"


def _fake_torchaudio(root: Path, extension_body: str) -> Path:
    package = root / "torchaudio"
    (package / "_extension").mkdir(parents=True)
    (package / "__init__.py").write_text(
        "from . import _extension\nfrom ._extension import _IS_TORCHAUDIO_EXT_AVAILABLE\n")
    (package / "_extension" / "__init__.py").write_text(extension_body)
    return root


def test_guard_does_nothing_when_extension_loads(tmp_path):
    root = _fake_torchaudio(tmp_path, "_IS_TORCHAUDIO_EXT_AVAILABLE = True\n")
    out = run_python("""
        import sys
        sys.path.insert(0, sys.path.pop(1))  # the fake package first
        from vallex.audio._torchaudio_guard import ensure_torchaudio, guard_engaged
        ta = ensure_torchaudio()
        print(ta._IS_TORCHAUDIO_EXT_AVAILABLE, guard_engaged())
    """, root)
    assert out == "True False"


def test_guard_engages_on_extension_oserror(tmp_path):
    body = "raise OSError('Could not load this library: torchaudio/lib/_torchaudio.abi3.so')\n"
    root = _fake_torchaudio(tmp_path, body)
    out = run_python("""
        import sys
        sys.path.insert(0, sys.path.pop(1))
        from vallex.audio._torchaudio_guard import ensure_torchaudio, guard_engaged
        ta = ensure_torchaudio()
        print(ta._IS_TORCHAUDIO_EXT_AVAILABLE, guard_engaged())
    """, root)
    assert out == "False True"


def test_guard_reraises_unrelated_oserror(tmp_path):
    root = _fake_torchaudio(tmp_path, "raise OSError('disk on fire')\n")
    out = run_python("""
        import sys
        sys.path.insert(0, sys.path.pop(1))
        from vallex.audio._torchaudio_guard import ensure_torchaudio
        try:
            ensure_torchaudio()
        except OSError as e:
            print("raised", e)
    """, root)
    assert out == "raised disk on fire"


def test_guard_engages_on_cuda_torch_errors(tmp_path):
    # What torchaudio 2.11 raises beside a CUDA torch of another CUDA version: not only OSError.
    for number, body in enumerate([
        "raise RuntimeError('Detected that PyTorch and TorchAudio were compiled with different CUDA versions. "
        "PyTorch has CUDA version 12.8 whereas TorchAudio has CUDA version 12.6.')\n",
        "raise ImportError('libcudart.so.12: cannot open shared object file: No such file or directory')\n",
        "raise ImportError('/x/_torchaudio.abi3.so: undefined symbol: _ZN3c104cuda9SetDeviceEi')\n",
    ]):
        root = _fake_torchaudio(tmp_path / str(number), body)
        out = run_python("""
            import sys
            sys.path.insert(0, sys.path.pop(1))
            from vallex.audio._torchaudio_guard import ensure_torchaudio, guard_engaged
            ta = ensure_torchaudio()
            print(ta._IS_TORCHAUDIO_EXT_AVAILABLE, guard_engaged())
        """, root)
        assert out == "False True", body


def test_guard_reraises_unrelated_runtime_and_import_errors(tmp_path):
    for number, (body, kind) in enumerate([("raise RuntimeError('out of memory in a pure-Python part')\n",
                                            "RuntimeError"),
                                           ("import numpyy_missing\n", "ModuleNotFoundError")]):
        root = _fake_torchaudio(tmp_path / str(number), body)
        out = run_python("""
            import sys
            sys.path.insert(0, sys.path.pop(1))
            from vallex.audio._torchaudio_guard import ensure_torchaudio, guard_engaged
            try:
                ensure_torchaudio()
            except (RuntimeError, ImportError) as e:
                print("raised", type(e).__name__, guard_engaged())
        """, root)
        assert out == f"raised {kind} False"
