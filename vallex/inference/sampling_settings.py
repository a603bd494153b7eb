"""How to sample, defined once: :class:`Sampling` (the settings of one synthesis, frozen and self-checking) and
:data:`SEED` (the request's seed).

Each field of :class:`Sampling` carries its :class:`Setting`: its kind, default, range, the value a form writes
for "off" and what "off" means, its title and help text. Every interface is derived from them and names no
setting itself: the command line (:func:`vallex.cli.options.add_sampling_options`), the HTTP body
(:mod:`vallex.serving.openai_schema`), the app's controls and the handlers that take them
(``demo/sampling_controls.py``); the AR (:class:`vallex.inference.ar.ARRequest`,
:class:`~vallex.inference.ar.FrameSampler`) and the scheduler read the fields. A new setting is one field here
(and the code that acts on it).

Why not in :mod:`vallex.inference.sampling`: that module turns logits into tokens (tensors); this one says what
a user may ask for and how each interface shows it (words, ranges, defaults), and its settings also steer the
scheduler (``length_guards``, ``verify``), not only the draws.

Why the seed is not a field of :class:`Sampling`: a :class:`Sampling` is a recipe shared by many requests (an
evaluation applies one to every line, a server or the app to every user), while a seed picks one draw of one
request: the HTTP API and the app draw a fresh one per request and report it, speech translation and ZeroGPU
calls use ``seed + i`` per piece, and the AR never sees a seed, only the random generator made from it on the
model's device (:class:`~vallex.inference.ar.ARRequest`'s ``generator``). So the seed is a field of the request
(:class:`vallex.synthesis.request.SynthesisRequest`), defined here beside the settings by :data:`SEED`.
"""
from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import numpy as np

from vallex.inference.ras import RAS_TOP_P

#: Verified best-of-N (``verify="asr"``, :mod:`vallex.synthesis.verification`): a candidate passes at this
#: phoneme error rate or below, and rounds of new candidates are sampled while none has passed, up to
#: ``verify_rounds``.
PASS_PHONEME_ERROR_RATE = 0.25
DEFAULT_VERIFY_ROUNDS = 3
MAX_VERIFY_ROUNDS = 8
VERIFY_MODES = ("asr",)

#: Smallest temperature: already as good as always taking the most likely token, and logits / temperature stays
#: finite: logits up to 655 in size stay within float16 (65504), the largest to 3e36 within float32 and bfloat16.
#: Below it (1e-40, 5e-324) the division overflows to inf and no token can be drawn.
MIN_TEMPERATURE = 0.01

#: Largest seed (torch generators take 64-bit seeds; one below 2**63 fits every integer type we pass it through).
MAX_SEED = 2**63 - 1

#: The key of a :class:`Sampling` field's :class:`Setting` in its ``dataclasses.field`` metadata.
SETTING = "vallex.setting"


@dataclass(frozen=True)
class Setting:
    """One setting as every interface shows it; :meth:`check` is its one validation.

    ``kind``: ``bool``, ``int``, ``float`` or ``str`` (one of ``choices``). A default of None makes it optional:
    None means ``none_means`` ("off"; "random" for the seed), and a form that cannot hold None (the app's slider)
    writes ``off`` for it (0 for top-k, 1 for top-p). Numbers lie in ``[low, high]`` (``(low, high]`` with
    ``low_open``; a missing bound is no bound); ``noun`` names them in messages. ``title``: a short name (the
    app's label, its messages); ``help``: what it does (the CLI's help, the HTTP schema's description, the app's
    info line), where ``{name}`` is another setting, named as each interface names it (:meth:`Sampling.help_of`).
    ``slider``: the app's slider (low, high, step), when it differs from the range.
    """

    kind: type
    default: Any
    title: str
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] = ()
    off: Any = None
    none_means: str = "off"
    noun: str | None = None
    slider: tuple[float, float, float] | None = None
    name: str = ""  # the field's name (set by :meth:`Sampling.settings`)

    @property
    def optional(self) -> bool:
        """Whether None is a value (its default is None: "off")."""
        return self.default is None

    def check(self, value: Any, name: str | None = None) -> Any:
        """``value`` as a plain Python value (numpy scalars too), or a ValueError naming the setting as ``name``
        (default: its field name; the CLI passes its option, the app its title) with the value and the range.
        NaN, booleans for numbers and numbers for booleans are refused, never read as off, 0 or 1."""
        name = name or self.name
        if value is None and self.optional:
            return None
        if self.kind is bool:
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            raise ValueError(f"{name} must be True or False, got {value!r}.")
        left_out = " (or left out)" if self.optional else ""
        if self.kind is str:
            if isinstance(value, str) and value in self.choices:
                return value
            raise ValueError(f"{name} must be one of {', '.join(self.choices)}{left_out}, got {value!r}.")
        if self.kind is int and _integer(value) and self._in_range(value):
            return int(value)
        if self.kind is float and _number(value) and self._in_range(value):
            return float(value)
        raise ValueError(f"{name} must be {self.describe()}{left_out}, got {value!r}.")

    def describe(self) -> str:
        """The values it takes, in words: "a whole number from 1 to 16", "a number in (0, 10]"."""
        low, high = _show(self.low), _show(self.high)
        if self.kind is int and low and high:
            return f"a whole number from {low} to {high}"
        if self.kind is int and low == "1" and not high:
            return "a positive whole number"
        noun = "whole number" if self.kind is int else self.noun or "number"
        if low and high:
            return f"a {noun} in {'(' if self.low_open else '['}{low}, {high}]"
        return f"a {noun}" + (f" {'>' if self.low_open else '>='} {low}" if low else "") + (
            f" <= {high}" if high else "")

    def _in_range(self, value: Any) -> bool:  # NaN fails every comparison
        if self.low is not None and not (value > self.low if self.low_open else value >= self.low):
            return False
        return self.high is None or value <= self.high


def _show(bound: float | None) -> str:
    """A bound as a message writes it ("" for none): 16, 0.25, 9223372036854775807 (never 9.22e+18)."""
    if bound is None:
        return ""
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def _number(value: Any) -> bool:  # numbers.Real: numpy scalars too; a bool is a mistake, not 0 or 1
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def setting(default: Any, kind: type, *, title: str, help: str, **details: Any) -> Any:
    """A :class:`Sampling` field: ``default`` and its :class:`Setting` (the other arguments) in its metadata."""
    return field(default=default, metadata={SETTING: Setting(kind, default, title, help, **details)})


#: The request's seed (see the module docstring for why it is not a :class:`Sampling` field).
SEED = Setting(int, None, "Seed", "random seed: the same seed gives the same audio", low=0, high=MAX_SEED, off=-1,
               none_means="random", name="seed")

S = TypeVar("S", bound="Sampling")


@dataclass(frozen=True)
class Sampling:
    """The sampling settings of one synthesis (see the module docstring); the defaults are the reference's plain
    sampling, so the same seed gives the same audio through every interface.

    Frozen and checked when made: a value out of range is a ValueError naming the field, the value and the range
    (:meth:`Setting.check`). Numpy scalars become Python values.
    """

    temperature: float = setting(
        1.0, float, low=MIN_TEMPERATURE, high=10, slider=(0.1, 1.5, 0.05), title="Temperature",
        help="divides the logits of each next token: below 1 sharpens their distribution, above 1 flattens it")
    top_k: int | None = setting(
        None, int, low=1, off=0, slider=(0, 1024, 1), title="Top-k",
        help="draw each token from the k most likely ones only")
    top_p: float | None = setting(
        None, float, low=0, high=1, low_open=True, off=1.0, slider=(0.05, 1.0, 0.05), title="Top-p",
        help="nucleus sampling: draw each token from the most likely ones that together hold this probability "
        f"(off: from all of them; with {{ras}}, off means {RAS_TOP_P}, which it needs)")
    best_of: int = setting(
        1, int, low=1, high=16, slider=(1, 8, 1), title="Best of N",
        help="sample N candidates of each sentence in one batch and keep the most likely (with {verify}: the one "
        "that says the text best)")
    ras: bool = setting(
        False, bool, title="Repetition-aware sampling",
        help="repetition-aware sampling (VALL-E 2; recommended): a token drawn too often in the last second is "
        f"redrawn from the full distribution; it needs a nucleus ({{top_p}}, {RAS_TOP_P} when off); off: the "
        "reference's plain sampling")
    length_guards: bool = setting(
        False, bool, title="Length guards",
        help="length guards (recommended): each sentence as long as its text needs at the measured speaking rates, "
        "no early end, no babble up to the limit; a sentence that reaches its limit is reported; off: the "
        "reference's limit of 16 frames per text token")
    verify: str | None = setting(
        None, str, choices=VERIFY_MODES, title="Check with speech recognition",
        help="verified best-of-N: Whisper hears each of a sentence's {best_of} candidates, scored by phoneme error "
        "rate and similarity to the prompt's voice; the best is kept, and new candidates are sampled while none "
        "passes (slow on a CPU; English uses the bundled Whisper tiny.en, Mandarin and Japanese need "
        "$VALLEX_ASR_MODEL)")
    verify_rounds: int = setting(
        DEFAULT_VERIFY_ROUNDS, int, low=1, high=MAX_VERIFY_ROUNDS, title="Verify rounds",
        help="with {verify}: rounds of new candidates at most")
    verify_threshold: float = setting(
        PASS_PHONEME_ERROR_RATE, float, low=0, high=1, noun="phoneme error rate", slider=(0.0, 1.0, 0.05),
        title="Verify threshold", help="with {verify}: the phoneme error rate a candidate must reach to pass")

    def __post_init__(self) -> None:
        for spec in self.settings():
            object.__setattr__(self, spec.name, spec.check(getattr(self, spec.name)))

    @classmethod
    def settings(cls) -> tuple[Setting, ...]:
        """Every field's :class:`Setting`, named, in field order (the order of every interface)."""
        return tuple(dataclasses.replace(f.metadata[SETTING], name=f.name) for f in fields(cls))

    @classmethod
    def help_of(cls, setting: Setting, label: Callable[[Setting], str]) -> str:
        """``setting``'s help text, naming each setting it mentions ("with {verify}: ...") as ``label`` names
        them in the interface that shows it (``--verify``, ``verify``, "Check with speech recognition")."""
        return setting.help.format_map({spec.name: label(spec) for spec in cls.settings()})

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_values(cls: type[S], values: Mapping[str, Any], label: Callable[[Setting], str] | None = None) -> S:
        """The settings ``values`` gives (the others default), each checked under the name ``label`` gives it
        (the CLI's ``--top-k``, the app's "Top-k"), so a message names what its user typed."""
        for spec in cls.settings():
            if spec.name in values:
                spec.check(values[spec.name], label(spec) if label is not None else None)
        return cls(**{name: values[name] for name in cls.names() if name in values})

    @classmethod
    def pop_from(cls: type[S], options: dict[str, Any]) -> S:
        """The settings among keyword ``options`` (removed from it), over ``options["sampling"]`` (also removed)
        if given: how ``synthesize(text, top_k=50)`` and ``ar_decode(..., top_k=1)`` name them."""
        base = options.pop("sampling", None)
        values = {name: options.pop(name) for name in cls.names() if name in options}
        if base is None:
            return cls(**values)
        if not isinstance(base, cls):
            raise ValueError(f"sampling must be a {cls.__name__}, got {type(base).__name__}.")
        return dataclasses.replace(base, **values) if values else base

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.names()}

    def changed(self) -> dict[str, Any]:
        """The settings that differ from their defaults (how a report names a decoding setup)."""
        return {spec.name: getattr(self, spec.name) for spec in self.settings()
                if getattr(self, spec.name) != spec.default}

    @property
    def nucleus(self) -> float | None:
        """The top-p the draws use: ``top_p``, except that repetition-aware sampling without one (None or 1)
        draws from :data:`~vallex.inference.ras.RAS_TOP_P`'s nucleus (a nucleus of 1 is the full distribution,
        the very one it redraws from). Here, not in the draw, so that every interface's help says it."""
        if self.ras and (self.top_p is None or self.top_p >= 1.0):
            return RAS_TOP_P
        return self.top_p


R = TypeVar("R")


def sampling_keywords(cls: type[R]) -> type[R]:
    """Let a request dataclass with a ``sampling`` field also take :class:`Sampling`'s fields as keywords:
    ``SynthesisRequest(text, prompt, top_k=50, ras=True)`` (:meth:`Sampling.pop_from`). Apply it to every such
    dataclass, subclasses included (``@dataclass`` writes each one's ``__init__`` anew)."""
    init = cls.__init__

    def __init__(self: Any, *args: Any, **options: Any) -> None:
        if "sampling" in options or any(name in options for name in Sampling.names()):
            options["sampling"] = Sampling.pop_from(options)
        init(self, *args, **options)

    __init__.__doc__, __init__.__wrapped__ = init.__doc__, init  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[method-assign]
    return cls
