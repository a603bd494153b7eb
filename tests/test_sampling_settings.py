"""One definition of how to sample: :class:`Sampling` checks itself, and the CLI, the HTTP body and the app's controls
are derived from it (a setting added in one place reaches all three), with one set of defaults."""
from __future__ import annotations

import argparse
import inspect
import math
from dataclasses import dataclass

import gradio as gr
import numpy as np
import pytest
import torch
from pydantic import ValidationError

from demo.sampling_controls import control_value, sampling_controls, sampling_from_controls, takes_sampling_controls
from vallex.cli.options import add_sampling_options, add_seed_option, sampling_from_args, seed_from_args
from vallex.config import VallexConfig
from vallex.inference.ar import ARRequest, FrameSampler, ar_decode
from vallex.inference.ras import RAS_TOP_P
from vallex.inference.sampling_settings import SEED, Sampling, setting
from vallex.model import VallexModel
from vallex.serving.openai_schema import SpeechBody, speech_body
from vallex.synthesis.request import SynthesisRequest


@dataclass(frozen=True)
class WithWobble(Sampling):
    """The settings with one more, defined here only: no other file knows of it."""

    wobble: float = setting(0.5, float, low=0, high=2, title="Wobble", help="how much to wobble (with {ras})")


# A new setting reaches every interface ------------------------------------------------------------------------

def test_a_new_setting_reaches_the_command_line():
    parser = argparse.ArgumentParser()
    add_sampling_options(parser, WithWobble)
    assert "how much to wobble (with --ras) (default: 0.5)" in " ".join(parser.format_help().split())
    args = parser.parse_args(["--wobble", "1.5", "--top-k", "7"])
    assert sampling_from_args(args, WithWobble) == WithWobble(top_k=7, wobble=1.5)
    assert sampling_from_args(parser.parse_args([]), WithWobble) == WithWobble()
    with pytest.raises(ValueError, match=r"--wobble must be a number in \[0, 2\], got 3.0"):
        sampling_from_args(parser.parse_args(["--wobble", "3"]), WithWobble)


def test_a_new_setting_reaches_the_http_body():
    body = speech_body(WithWobble)
    wobble = body.model_json_schema()["properties"]["wobble"]
    assert wobble == {"default": 0.5, "minimum": 0, "maximum": 2, "title": "Wobble", "type": "number",
                      "description": "how much to wobble (with ras)"}
    assert body.model_validate({"input": "Hi.", "wobble": 1}).wobble == 1.0
    for bad in (2.5, "1", True):
        with pytest.raises(ValidationError):
            body.model_validate({"input": "Hi.", "wobble": bad})
    assert "wobble" not in SpeechBody.model_fields  # the real body has the real settings only


def test_a_new_setting_reaches_the_apps_controls_and_handlers():
    with gr.Blocks():
        controls = sampling_controls(sampling=WithWobble)
    assert [c.label for c in controls][-1] == "Wobble" and controls[-1].value == 0.5
    assert len(controls) == 1 + len(WithWobble.settings())

    seen = {}

    @takes_sampling_controls(WithWobble)
    def handler(text: str, seed: int, sampling: Sampling, progress: str = "bar") -> None:
        seen.update(text=text, seed=seed, sampling=sampling, progress=progress)

    names = list(inspect.signature(handler).parameters)
    assert names == ["text", "seed", *WithWobble.names(), "progress"]  # Gradio's API parameters
    handler("Hi.", 3, 1.0, 0, 1.0, 1, False, False, False, 3, 0.25, 1.25)
    assert seen == {"text": "Hi.", "seed": 3, "sampling": WithWobble(wobble=1.25), "progress": "bar"}
    handler("Hi.", 4, wobble=0.75)  # by name; the others as the controls start
    assert seen["seed"] == 4 and seen["sampling"] == WithWobble(wobble=0.75)


#: The sampling fields of ``POST /v1/audio/speech`` as they were written by hand before they were derived.
SCHEMA_BEFORE = {
    "seed": {"anyOf": [{"maximum": 9223372036854775807, "minimum": 0, "type": "integer"}, {"type": "null"}],
             "default": None, "title": "Seed"},
    # issue 36: the lower bound became MIN_TEMPERATURE (below it logits / temperature overflow).
    "temperature": {"default": 1.0, "minimum": 0.01, "maximum": 10, "title": "Temperature", "type": "number"},
    "top_k": {"anyOf": [{"minimum": 1, "type": "integer"}, {"type": "null"}], "default": None, "title": "Top K"},
    "top_p": {"anyOf": [{"exclusiveMinimum": 0, "maximum": 1, "type": "number"}, {"type": "null"}], "default": None,
              "title": "Top P"},
    "best_of": {"default": 1, "maximum": 16, "minimum": 1, "title": "Best Of", "type": "integer"},
    "ras": {"default": False, "title": "Ras", "type": "boolean"},
    "length_guards": {"default": False, "title": "Length Guards", "type": "boolean"},
    "verify": {"anyOf": [{"const": "asr", "type": "string"}, {"type": "null"}], "default": None, "title": "Verify"},
    "verify_rounds": {"default": 3, "maximum": 8, "minimum": 1, "title": "Verify Rounds", "type": "integer"},
}


def test_the_derived_http_body_is_the_hand_written_one_plus_descriptions_and_verify_threshold():
    schema = SpeechBody.model_json_schema()
    derived = {name: dict(field) for name, field in schema["properties"].items() if name in [*SCHEMA_BEFORE,
                                                                                             *Sampling.names()]}
    for name, field in derived.items():
        description = field.pop("description")
        assert description == (SEED.help if name == "seed" else Sampling.help_of(
            next(s for s in Sampling.settings() if s.name == name), lambda other: other.name))
    assert derived.pop("verify_threshold") == {"default": 0.25, "maximum": 1, "minimum": 0,
                                                "title": "Verify Threshold", "type": "number"}
    assert derived == SCHEMA_BEFORE
    assert schema["required"] == ["input"] and schema["additionalProperties"] is False
    for bad in ({"temperature": "1"}, {"seed": True}, {"top_k": 5.0}, {"ras": 1}, {"best_of": 17}):
        with pytest.raises(ValidationError):  # strict, as before
            SpeechBody.model_validate({"input": "Hi.", **bad})


# One set of defaults ---------------------------------------------------------------------------------------

def test_every_interface_starts_from_the_librarys_defaults():
    assert Sampling() == Sampling(temperature=1.0, top_k=None, top_p=None, best_of=1, ras=False,
                                  length_guards=False, verify=None, verify_rounds=3, verify_threshold=0.25)
    parser = argparse.ArgumentParser()
    add_seed_option(parser)
    add_sampling_options(parser)
    args = parser.parse_args([])
    assert sampling_from_args(args) == Sampling() and seed_from_args(args) is None
    body = SpeechBody.model_validate({"input": "Hi."})
    assert Sampling(**{name: getattr(body, name) for name in Sampling.names()}) == Sampling() and body.seed is None
    with gr.Blocks():
        controls = sampling_controls()
    seed, sampling = sampling_from_controls([c.value for c in controls])
    assert sampling == Sampling() and 0 <= seed < 2**31  # -1: a random seed
    assert controls[0].value == SEED.off
    assert SynthesisRequest("Hi.").sampling == Sampling()


def test_the_app_shows_off_as_its_controls_can():
    with gr.Blocks():
        controls = dict(zip(["seed", *Sampling.names()], sampling_controls({"verify": "asr"})))
    assert (controls["top_k"].value, controls["top_p"].value, controls["verify"].value) == (0, 1.0, True)
    assert controls["top_k"].label == "Top-k (0: off)" and controls["top_p"].label == "Top-p (1: off)"
    assert controls["seed"].label == "Seed (-1: random)"
    # Top-p off with repetition-aware sampling is 0.8: the slider's help says so, and so does every interface's.
    assert f'with "Repetition-aware sampling", off means {RAS_TOP_P}' in controls["top_p"].info
    assert f"off means {RAS_TOP_P}" in SpeechBody.model_json_schema()["properties"]["top_p"]["description"]
    assert [control_value(s, s.default) for s in Sampling.settings()] == [1.0, 0, 1.0, 1, False, False, False, 3,
                                                                           0.25]


# Checks ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("values, message", [
    ({"temperature": 0}, "temperature must be a number in [0.01, 10], got 0."),
    ({"temperature": 1e-40}, "temperature must be a number in [0.01, 10], got 1e-40."),
    ({"temperature": math.nan}, "temperature must be a number in [0.01, 10], got nan."),
    ({"top_k": 0}, "top_k must be a positive whole number (or left out), got 0."),
    ({"top_k": 2.0}, "top_k must be a positive whole number (or left out), got 2.0."),
    ({"top_p": 1.5}, "top_p must be a number in (0, 1] (or left out), got 1.5."),
    ({"best_of": 17}, "best_of must be a whole number from 1 to 16, got 17."),
    ({"best_of": True}, "best_of must be a whole number from 1 to 16, got True."),
    ({"ras": "yes"}, "ras must be True or False, got 'yes'."),
    ({"length_guards": 1}, "length_guards must be True or False, got 1."),
    ({"verify": "whisper"}, "verify must be one of asr (or left out), got 'whisper'."),
    ({"verify_rounds": 9}, "verify_rounds must be a whole number from 1 to 8, got 9."),
    ({"verify_threshold": -0.1}, "verify_threshold must be a phoneme error rate in [0, 1], got -0.1."),
])
def test_sampling_checks_itself_naming_the_field_the_value_and_the_range(values, message):
    with pytest.raises(ValueError) as caught:
        Sampling(**values)
    assert str(caught.value) == message


def test_messages_name_what_each_interface_calls_a_setting():
    with pytest.raises(ValueError, match=r"^--top-p must be a number in \(0, 1\]"):
        Sampling.from_values({"top_p": 2.0}, label=lambda s: "--" + s.name.replace("_", "-"))
    with pytest.raises(ValueError, match="^Best of N must be a whole number from 1 to 16"):
        Sampling.from_values({"best_of": 0}, label=lambda s: s.title)
    with pytest.raises(ValueError, match="^--seed must be a whole number from 0 to 9223372036854775807"):
        SEED.check(2**63, "--seed")
    assert Sampling(top_k=np.int64(5), ras=np.bool_(True)).as_dict()["top_k"] == 5
    with pytest.raises(AttributeError):
        Sampling().top_k = 5  # frozen


def test_requests_take_the_settings_as_keywords_or_whole():
    by_keyword = SynthesisRequest("Hi.", "voice", seed=1, top_k=50, ras=True)
    assert by_keyword == SynthesisRequest("Hi.", "voice", seed=1, sampling=Sampling(top_k=50, ras=True))
    assert SynthesisRequest("Hi.", sampling=Sampling(top_k=5), top_p=0.9).sampling == Sampling(top_k=5, top_p=0.9)
    assert SynthesisRequest.coerce({"text": "Hi.", "best_of": 2}).sampling.best_of == 2
    with pytest.raises(ValueError, match="Unknown request fields: colour"):
        SynthesisRequest.coerce({"text": "Hi.", "colour": 2})
    with pytest.raises(ValueError, match="sampling must be a Sampling"):
        SynthesisRequest("Hi.", sampling={"top_k": 5})


# The AR takes a Sampling ----------------------------------------------------------------------------------------

def test_the_ar_request_holds_inputs_a_sampling_and_limits():
    text, langs, prompt0 = torch.arange(5)[None] + 20, torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, 0).long()
    request = ARRequest.of(text, langs, prompt0, top_k=3, best_of=2, max_frames=7)
    assert request.sampling == Sampling(top_k=3, best_of=2) and request.max_frames == 7
    torch.manual_seed(0)
    model = VallexModel(VallexConfig.tiny()).eval()
    sampler = FrameSampler.for_request(model, request)
    assert sampler.rows == 2 and sampler.max_frames == 7 and sampler.sampling is request.sampling


def test_repetition_aware_sampling_without_a_nucleus_draws_from_0_8():
    assert Sampling(ras=True).nucleus == RAS_TOP_P and Sampling(ras=True, top_p=1.0).nucleus == RAS_TOP_P
    assert Sampling(ras=True, top_p=0.5).nucleus == 0.5 and Sampling(top_p=1.0).nucleus == 1.0
    assert Sampling().nucleus is None
    torch.manual_seed(0)
    model = VallexModel(VallexConfig.tiny()).eval()
    text, langs, prompt0 = torch.arange(5)[None] + 20, torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, 0).long()

    def codes(**options) -> torch.Tensor:
        return ar_decode(model, text, langs, prompt0, min_frames=20, max_frames=20,
                         generator=torch.Generator().manual_seed(4), **options).codes

    assert torch.equal(codes(ras=True), codes(ras=True, top_p=RAS_TOP_P))
