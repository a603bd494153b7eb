"""Checkpoint files as they are published: trainer-style pickles with Windows or POSIX paths, zip or legacy.

Built from the golden set's state dict (``VALLEX_GOLDEN_DIR``) by :mod:`checkpoint_fixtures`, which writes them
with torch.save alone; what each must load to is the state dict read from the golden file by plain
``torch.load``, not by the loader under test.
"""
from __future__ import annotations

import json
import pathlib
import pickle
import re

import pytest
import torch
from checkpoint_fixtures import (
    FORMATS,
    PATH_FLAVOURS,
    PUBLISHED_GLOBALS,
    pickle_globals,
    tensors_digest_by_hand,
    write_code_running_checkpoint,
    write_trainer_checkpoint,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vallex.cli import main as cli_main
from vallex.config import VallexConfig
from vallex.inference.generation import generate
from vallex.weights.checkpoint import checkpoint_digest, load_model, read_state_dict, state_dict_digest


@pytest.fixture(scope="module")
def golden_state(golden) -> dict[str, torch.Tensor]:
    return dict(torch.load(golden / "checkpoint.pt", map_location="cpu", weights_only=True)["model"])


@pytest.fixture(scope="module")
def golden_config(golden) -> VallexConfig:
    return VallexConfig.from_json(golden / "config.json")


@pytest.fixture(scope="module")
def trainer_files(golden_state, tmp_path_factory) -> dict[tuple[str, str], pathlib.Path]:
    folder = tmp_path_factory.mktemp("trainer-checkpoints")
    return {(fmt, flavour): write_trainer_checkpoint(golden_state, folder / f"{fmt}-{flavour}.pt", fmt=fmt,
                                                     flavour=flavour)
            for fmt in FORMATS for flavour in PATH_FLAVOURS}


def test_the_windows_fixture_has_the_published_files_globals(trainer_files):
    """The same four globals as Hugging Face's scan of the published file: nothing more, nothing less."""
    assert pickle_globals(trainer_files["zip", "windows"]) == PUBLISHED_GLOBALS
    assert ("pathlib", "PosixPath") in pickle_globals(trainer_files["zip", "posix"])


def test_a_foreign_path_class_cannot_be_loaded_the_naive_way(trainer_files):
    """Why the loader maps path classes: allow-listing the concrete class fails on the other OS."""
    foreign = "posix" if pathlib.Path is pathlib.WindowsPath else "windows"
    with torch.serialization.safe_globals([pathlib.WindowsPath, pathlib.PosixPath]), \
            pytest.raises((NotImplementedError, pickle.UnpicklingError)):
        torch.load(trainer_files["zip", foreign], map_location="cpu", weights_only=True)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("flavour", PATH_FLAVOURS)
@pytest.mark.parametrize("mmap", [True, False])
def test_trainer_checkpoints_load_to_exactly_the_state_dict_inside(trainer_files, golden_state, fmt, flavour, mmap):
    state, config = read_state_dict(trainer_files[fmt, flavour], mmap=mmap)
    assert config is None
    assert list(state) == list(golden_state)  # only ["model"] is kept, in its order
    for key, value in golden_state.items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key


def test_a_model_from_the_windows_file_gives_the_golden_codes(trainer_files, golden, golden_config):
    """The arithmetic the goldens prove, reached through a file in the published format."""
    import json

    cases = json.loads((golden / "cases.json").read_text(encoding="utf-8"))["cases"]
    case = next(c for c in cases if c["outputs"]["stop_reason"] != "forced")
    inputs, out = case["inputs"], case["outputs"]
    model = load_model(trainer_files["legacy", "windows"], golden_config)
    result = generate(
        model, torch.tensor(inputs["text_tokens"]), enroll_len=int(inputs["enroll_x_lens"]),
        prompt_codes=torch.tensor(inputs["audio_prompts"]).reshape(inputs["audio_prompts_shape"]),
        prompt_language=inputs["prompt_language"], text_language=inputs["text_language"], top_k=1)
    assert torch.equal(result.codes, torch.tensor(out["codes"]).reshape(out["codes_shape"]))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_code_running_payload_is_refused_in_one_line(golden_state, tmp_path, fmt, capfd):
    path = write_code_running_checkpoint(golden_state, tmp_path / "payload.pt", fmt=fmt)
    with pytest.raises(ValueError) as caught:
        read_state_dict(path)
    message = str(caught.value)
    assert "\n" not in message and "refused" in message and "system" in message
    assert "must never run" not in capfd.readouterr().out


class _Evaluator:
    """A payload asking for ``eval``, a global torch's unpickler does not block by module (its advice differs)."""

    def __reduce__(self):
        return eval, ("1",)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_refusal_names_the_global_and_never_relays_advice_to_load_it_anyway(tmp_path, fmt):
    path = tmp_path / "payload.pt"
    torch.save({"model": {}, "sampler": _Evaluator()}, path, _use_new_zipfile_serialization=fmt == "zip")
    with pytest.raises(ValueError) as caught:
        read_state_dict(path)
    message = str(caught.value)
    assert str(path) in message and "global eval" in message and "\n" not in message
    assert not any(advice in message for advice in ("weights_only", "safe_globals", "trusted", "allowlist"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_convert_checkpoint_turns_a_windows_file_into_safetensors(trainer_files, golden_state, golden, tmp_path,
                                                                  fmt, capsys):
    target = tmp_path / "vallex-checkpoint.safetensors"
    code = cli_main(["convert-checkpoint", str(trainer_files[fmt, "windows"]), str(target),
                     "--config", str(golden / "config.json")])
    assert code == 0, capsys.readouterr().err
    state, config = read_state_dict(target)
    assert config == VallexConfig.from_json(golden / "config.json")
    for key, value in state.items():  # the tied predictors are stored once, under the embedding's name
        assert torch.equal(value, golden_state[key]), key


BAD_FILES = {
    "empty": (b"", "is empty"),
    "text": (b"hello, this is not a checkpoint\n", "not a PyTorch checkpoint"),
    "plain pickle": (pickle.dumps({"model": {"w": 1}}, protocol=4), "not a PyTorch checkpoint"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_convert_checkpoint_rejects_non_checkpoints_in_one_line(kind, tmp_path, capsys):
    data, expected = BAD_FILES[kind]
    source = tmp_path / "bad.pt"
    source.write_bytes(data)
    assert cli_main(["convert-checkpoint", str(source), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_convert_checkpoint_rejects_payloads_and_damaged_files_in_one_line(golden_state, tmp_path, fmt, capsys):
    payload = write_code_running_checkpoint(golden_state, tmp_path / "payload.pt", fmt=fmt)
    assert cli_main(["convert-checkpoint", str(payload), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and err.count("\n") == 1
    good = write_trainer_checkpoint(golden_state, tmp_path / "good.pt", fmt=fmt, flavour="windows")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert cli_main(["convert-checkpoint", str(truncated), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "could not be read" in err and err.count("\n") == 1
    assert not (tmp_path / "out.safetensors").exists()


def test_converted_files_get_the_usual_permissions(golden, tmp_path):
    """Like any new file (0o666 less the umask): safetensors' writer alone would leave 0o600."""
    import os

    source = tmp_path / "vallex-checkpoint.pt"
    source.write_bytes((golden / "checkpoint.pt").read_bytes())
    umask = os.umask(0o022)
    try:
        for target in (tmp_path / "a.safetensors", tmp_path / "b.pt"):
            assert cli_main(["convert-checkpoint", str(source), str(target), "--config",
                             str(golden / "config.json")]) == 0
            assert target.stat().st_mode & 0o777 == 0o644, target.name
    finally:
        os.umask(umask)


# The state-dict digest: which tensors a file holds, whatever wrote it --------------------------------------------

@pytest.fixture(scope="module")
def golden_digest(golden_state) -> str:
    return tensors_digest_by_hand(golden_state)


def test_the_golden_files_digest_is_its_tensors_hashed_by_hand(golden, golden_state, golden_digest, tmp_path,
                                                                monkeypatch, capsys):
    from vallex.weights import checkpoint

    assert checkpoint_digest(golden / "checkpoint.pt") == golden_digest
    assert cli_main(["checkpoint-digest", str(golden / "checkpoint.pt")]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{golden_digest}  {golden / 'checkpoint.pt'}\n"
    assert "No digest of the published checkpoint's tensors is recorded" in captured.err
    other = tmp_path / "other.pt"
    torch.save({"model": {**golden_state, "ar_text_position.alpha": golden_state["ar_text_position.alpha"] * 2}}, other)
    monkeypatch.setattr(checkpoint, "PUBLISHED_STATE_DIGEST", golden_digest)  # as if recorded from the golden file
    assert cli_main(["checkpoint-digest", str(golden / "checkpoint.pt"), str(other)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [f"{golden / 'checkpoint.pt'}: the published checkpoint's tensors",
                   f"{other}: not the published checkpoint's tensors"]


def _rewritten(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same values with other storage: no sharing, transposed strides, an offset into a bigger storage."""
    out = {}
    for number, (key, value) in enumerate(state.items()):
        if value.dim() == 2 and number % 2:
            out[key] = value.t().contiguous().t()  # column-major strides
        elif number % 3 == 0:
            padded = torch.cat([torch.zeros(7, dtype=value.dtype), value.reshape(-1)])
            out[key] = padded[7:].view(value.shape)  # storage offset 7
        else:
            out[key] = value.clone()  # the tied predictors no longer share storage
    return out


def test_the_digest_ignores_how_the_file_was_written(trainer_files, golden_state, golden, golden_digest, tmp_path):
    resaved = tmp_path / "resaved.pt"
    torch.save({"model": _rewritten(golden_state)}, resaved)
    reread = torch.load(resaved, weights_only=True)["model"]  # torch.save keeps strides and offsets
    assert any(not v.is_contiguous() for v in reread.values()) and any(v.storage_offset() for v in reread.values())
    converted = tmp_path / "converted.safetensors"
    assert cli_main(["convert-checkpoint", str(golden / "checkpoint.pt"), str(converted),
                     "--config", str(golden / "config.json")]) == 0
    assert "nar_predict_layers.0.weight" not in read_state_dict(converted)[0]  # stored once, under the embedding
    copies = [*trainer_files.values(), resaved, converted]
    golden_bytes = (golden / "checkpoint.pt").read_bytes()
    assert all(copy.read_bytes() != golden_bytes for copy in copies)  # other bytes every time ...
    for copy in copies:
        assert checkpoint_digest(copy) == golden_digest, copy.name  # ... the same tensors


def test_the_digest_sees_every_change_of_value_dtype_shape_or_name(golden_state, golden_digest):
    key = "ar_audio_embedding.word_embeddings.weight"
    value = golden_state[key]
    nudged = value.clone()
    nudged.view(-1)[5] = torch.nextafter(nudged.view(-1)[5], torch.tensor(float("inf")))  # one bit of one value
    changes = {
        "value": {**golden_state, key: nudged},
        "dtype": {**golden_state, key: value.double()},
        "shape": {**golden_state, key: value.reshape(value.shape[1], value.shape[0])},  # the same bytes
        "name": {**{k: v for k, v in golden_state.items() if k != key}, key + "_renamed": value},
        "missing": {k: v for k, v in golden_state.items() if k != key},
    }
    digests = {what: state_dict_digest(state) for what, state in changes.items()}
    assert state_dict_digest(dict(golden_state)) == golden_digest
    assert golden_digest not in digests.values() and len(set(digests.values())) == len(changes), digests
    for what, state in changes.items():  # the hand-made digest agrees on each
        assert tensors_digest_by_hand(state) == digests[what], what


@pytest.mark.parametrize("wrapped", [True, False])
def test_a_ddp_state_dict_loads_with_its_module_prefix_stripped(golden, golden_state, golden_config, golden_digest,
                                                               tmp_path, wrapped, capsys):
    """``torch.save(ddp_model.state_dict())`` puts ``module.`` before every key; such a file is the same model."""
    from vallex.weights.checkpoint import check_checkpoint

    ddp = {f"module.{key}": value for key, value in golden_state.items()}
    path = tmp_path / "ddp.pt"
    torch.save({"model": ddp} if wrapped else ddp, path)
    state, _ = read_state_dict(path)
    assert list(state) == list(golden_state)
    assert all(torch.equal(state[key], value) for key, value in golden_state.items())
    check_checkpoint(path, golden_config)  # what `vallex download --check` and downloads run
    model = load_model(path, golden_config)
    assert all(torch.equal(model.state_dict()[key], value) for key, value in golden_state.items())
    assert checkpoint_digest(path) == golden_digest  # the same tensors as the golden file


def test_a_state_dict_mixing_ddp_and_plain_keys_is_refused_in_one_line(golden_state, golden_config, tmp_path):
    mixed = {(f"module.{key}" if number % 2 else key): value
             for number, (key, value) in enumerate(golden_state.items())}
    path = tmp_path / "mixed.pt"
    torch.save({"model": mixed}, path)
    with pytest.raises(ValueError, match=r"mixes keys with and without the 'module\.' prefix") as caught:
        load_model(path, golden_config)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


# A model file is untrusted input: damaged or hostile safetensors headers -----------------------------------------

def write_safetensors(path: pathlib.Path, header: object, data: bytes = b"", raw: bytes | None = None) -> pathlib.Path:
    """A safetensors file with exactly this header (any JSON value, or ``raw`` header bytes) and data."""
    encoded = raw if raw is not None else json.dumps(header).encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)
    return path


def small_header(**metadata: str) -> tuple[dict, bytes]:
    """A valid header of two tensors (float32 [2, 3], int64 [4]) and their 56 bytes of data."""
    header = {"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
              "b": {"dtype": "I64", "shape": [4], "data_offsets": [24, 56]}}
    if metadata:
        header["__metadata__"] = metadata
    return header, bytes(range(56))


def _entry(change: dict) -> tuple[dict, bytes]:
    header, data = small_header()
    header["a"] = {**header["a"], **change}
    return header, data


#: name -> (header, data, the words the one-line error must hold); each file was a traceback before.
HOSTILE_SAFETENSORS = {
    "header a list": ([1, 2], b"", "header is a JSON list"),
    "header a string": ("tensors", b"", "header is a JSON str"),
    "header null": (None, b"", "header is a JSON NoneType"),
    "metadata a list": ({"__metadata__": ["x"]}, b"", "__metadata__ is not a mapping"),
    "metadata value a number": ({"__metadata__": {"vallex_config": 3}}, b"", "__metadata__ is not a mapping"),
    "config not JSON": ({"__metadata__": {"vallex_config": "{d_model: 1"}}, b"", "is not valid JSON"),
    "config a list": ({"__metadata__": {"vallex_config": "[1, 2]"}}, b"", "must be a JSON object"),
    "config nested deeply": ({"__metadata__": {"vallex_config": "[" * 100_000 + "]" * 100_000}}, b"",
                             "nested too deeply"),
    "config too large": ({"__metadata__": {"vallex_config": '{"num_layers": 2000000}'}}, b"",
                         "num_layers must be a whole number from 1 to 256"),
    "config a boolean size": ({"__metadata__": {"vallex_config": '{"d_model": true}'}}, b"",
                              "d_model must be a whole number"),
    "entry a list": ({"a": [1]}, b"", "malformed header entry"),
    "unknown dtype": (*_entry({"dtype": "F8_E9"}), "unsupported dtype"),
    "dtype a list": (*_entry({"dtype": ["F32"]}), "unsupported dtype"),
    "negative shape": (*_entry({"shape": [-2, -3]}), "no valid shape"),
    "shape of booleans": (*_entry({"shape": [True, 6]}), "no valid shape"),
    "shape of floats": (*_entry({"shape": [2.0, 3]}), "no valid shape"),
    "huge shape": (*_entry({"shape": [2 ** 62, 2 ** 62]}), "elements"),
    "many dimensions": (*_entry({"shape": [1] * 100}), "no valid shape"),
    "bytes not the shape's": (*_entry({"shape": [3, 3]}), "needs 36 bytes"),
    "bytes not the dtype's": (*_entry({"dtype": "F16"}), "needs 12 bytes"),
    "offsets reversed": (*_entry({"data_offsets": [24, 0]}), "no valid data_offsets"),
    "offsets strings": (*_entry({"data_offsets": ["0", "24"]}), "no valid data_offsets"),
    "offsets past the file": (*_entry({"data_offsets": [100, 124]}), "outside the file"),
    "offsets overlapping": ({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                             "b": {"dtype": "F32", "shape": [2, 3], "data_offsets": [12, 36]}}, bytes(36),
                            "overlaps"),
    "a gap": ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, bytes(16), "gap"),
    "bytes after the tensors": (small_header()[0], bytes(60), "truncated or damaged"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_SAFETENSORS))
def test_a_hostile_safetensors_header_is_one_line_naming_the_file(kind, tmp_path, capsys):
    header, data, expected = HOSTILE_SAFETENSORS[kind]
    source = write_safetensors(tmp_path / "hostile.safetensors", header, data)
    with pytest.raises(ValueError, match=re.escape(str(source))) as caught:
        read_state_dict(source)
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert cli_main(["convert-checkpoint", str(source), str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(source) in err and expected in err, err
    assert not (tmp_path / "out.pt").exists()
    # synthesize reads the file's languages before anything else loads: the same line.
    assert cli_main(["synthesize", "--checkpoint", str(source), "--weights-dir", str(tmp_path), "--text", "Hi.",
                     "-o", str(tmp_path / "out.wav"), "--quiet"]) == 2
    assert capsys.readouterr().err == err.replace("convert-checkpoint", "synthesize")


def test_a_header_nested_deeply_or_longer_than_the_file_is_one_line(tmp_path):
    for name, raw, data in (("deep", b"[" * 100_000 + b"]" * 100_000, b""), ("long", b"{}", b"")):
        source = write_safetensors(tmp_path / f"{name}.safetensors", None, data, raw=raw)
        if name == "long":  # the length prefix claims more header bytes than the file holds
            source.write_bytes((10 ** 6).to_bytes(8, "little") + raw)
        with pytest.raises(ValueError, match=re.escape(str(source))):
            read_state_dict(source)


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=4), max_leaves=12)
_FIELDS = st.sampled_from(["dtype", "shape", "data_offsets", "__metadata__", "vallex_config", "whole entry",
                           "whole header"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(st.tuples(_FIELDS, _JSON, st.sampled_from(["a", "b"])), min_size=1, max_size=3),
       data_length=st.sampled_from([0, 24, 55, 56, 57, 200]))
def test_any_damage_to_a_safetensors_header_is_a_value_error_naming_the_file(changes, data_length, tmp_path):
    """Whatever a header holds, reading it gives tensors matching the header or one ValueError line naming the
    file: never a TypeError, RuntimeError, RecursionError or a tensor view beyond its bytes."""
    header, data = small_header(vallex_config=json.dumps(VallexConfig.tiny().to_dict()))
    for field, value, key in changes:
        if field == "whole header":
            header = value
        elif not isinstance(header, dict):
            continue
        elif field == "whole entry":
            header[key] = value
        elif field == "__metadata__":
            header["__metadata__"] = value
        elif field == "vallex_config":
            header.setdefault("__metadata__", {})
            if isinstance(header["__metadata__"], dict):
                header["__metadata__"]["vallex_config"] = json.dumps(value)
        elif isinstance(header.get(key), dict):
            header[key][field] = value
    source = write_safetensors(tmp_path / "fuzzed.safetensors", header, (data * 4)[:data_length])
    try:
        state, config = read_state_dict(source)
    except ValueError as error:
        assert str(source) in str(error) and "\n" not in str(error)
        return
    for tensor in state.values():  # accepted: every tensor is exactly what its header entry says
        assert tensor.numel() * tensor.element_size() <= data_length


def test_a_config_that_does_not_describe_the_tensors_is_refused_before_a_model_is_built(tmp_path, monkeypatch):
    from vallex.model import VallexModel
    from vallex.weights import checkpoint

    tiny = VallexModel(VallexConfig.tiny())
    source = checkpoint.save_checkpoint(tiny, tmp_path / "tiny.safetensors")
    built = []
    monkeypatch.setattr(checkpoint, "VallexModel", lambda config: built.append(config))
    for sizes, named in (({"num_layers": 200}, "num_layers 2 in the file, 200 in the configuration"),
                         ({"d_model": 4096, "nhead": 16}, "d_model 64 in the file, 4096"),
                         ({"num_quantizers": 32}, "num_quantizers 8 in the file, 32"),
                         ({"text_vocab_size": 60000}, "text_vocab_size 2048 in the file, 60000"),
                         ({"ff_multiplier": 16}, "ff_multiplier 4 in the file, 16")):
        config = VallexConfig(**{**VallexConfig.tiny().to_dict(), **sizes})
        with pytest.raises(ValueError, match=re.escape(named)) as caught:
            checkpoint.load_model(source, config)
        assert str(source) in str(caught.value) and "\n" not in str(caught.value)
    assert built == []
    # The public sizes (no config given) against a tiny file: the same one line, before anything is built.
    state = {key: value.clone() for key, value in tiny.state_dict().items()}
    with pytest.raises(ValueError, match="d_model 64 in the file, 1024 in the configuration"):
        checkpoint.model_from_state_dict(state, VallexConfig.public(), source="bare.pt")
    assert built == []


def test_a_renamed_tensor_is_one_short_line_however_long_its_name(tmp_path, capsys):
    """Sizes that match but a key that does not: the key-by-key check's message is one line, each name cut."""
    from vallex.model import VallexModel
    from vallex.weights.checkpoint import save_checkpoint

    source = save_checkpoint(VallexModel(VallexConfig.tiny()), tmp_path / "tiny.safetensors")
    data = source.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    header["x" * 1_000_000] = header.pop("ar_decoder.norm.weight")
    write_safetensors(source, header, data[8 + length:])
    assert cli_main(["convert-checkpoint", str(source), str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(source) in err and "missing keys: ar_decoder.norm.weight" in err
    assert "unexpected keys: xxxx" in err and len(err) < 2000


@pytest.mark.parametrize("content, message", [
    (b"\xff[]", "is not UTF-8 text"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"[" * 600 + b"]" * 600, "languages"),
])
def test_a_damaged_languages_file_beside_a_checkpoint_is_named(tmp_path, content, message):
    from vallex.model import VallexModel
    from vallex.weights.checkpoint import checkpoint_languages, save_checkpoint

    source = save_checkpoint(VallexModel(VallexConfig.tiny()), tmp_path / "model.safetensors")
    table = tmp_path / "languages.json"
    table.write_bytes(content)
    with pytest.raises(ValueError, match=message) as caught:
        checkpoint_languages(source)
    assert str(table) in str(caught.value) and "\n" not in str(caught.value) and len(str(caught.value)) < 1000
