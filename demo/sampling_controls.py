"""The app's sampling controls, derived from :class:`vallex.inference.sampling_settings.Sampling`: the widgets
(:func:`sampling_controls`, :func:`seed_control`), their values read back (:func:`sampling_from_controls`,
:func:`app_seed`) and the handlers that take them (:func:`takes_sampling_controls`).

One control per setting, in the settings' order, after the seed: each setting's title, help and range make its
widget, and its name is the handler's parameter, so Gradio's API endpoints (``/clone``, ``/preset``) take
``seed, temperature, top_k, ...`` by name or in that order. A form cannot hold None, so a setting that is off
shows its ``off`` value (top-k 0, top-p 1, seed -1) and a setting with one mode (``verify="asr"``) is a
checkbox. The initial values are the library's defaults, so the same seed gives the same audio as the API.
"""
from __future__ import annotations

import functools
import inspect
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gradio as gr

from vallex.inference.sampling_settings import SEED, Sampling, Setting

#: Numeric controls per row of the accordion.
PER_ROW = 3


def _quoted_title(setting: Setting) -> str:
    """How the app's help texts name another setting: its control's title."""
    return f'"{setting.title}"'


def _is_checkbox(setting: Setting) -> bool:
    return setting.kind is bool or len(setting.choices) == 1


def control_value(setting: Setting, value: Any) -> Any:
    """A setting's value as its control shows it: None as the control's off value (top-k 0, top-p 1; a
    one-mode setting's unticked box; a menu's "off")."""
    if setting.choices:
        return value is not None if len(setting.choices) == 1 else (setting.none_means if value is None else value)
    return setting.off if value is None and setting.optional else value


def setting_value(setting: Setting, raw: Any) -> Any:
    """What ``setting``'s control gave, as the setting's value: empty is its default, its off value None; a value
    that is not a number where one is needed is a ValueError naming the control (its range is checked by
    :class:`Sampling`)."""
    if raw is None or raw == "":
        return setting.default
    if setting.kind is bool:
        return bool(raw)
    if setting.choices:
        if len(setting.choices) == 1:
            return setting.choices[0] if raw else None
        return None if raw == setting.none_means else raw
    try:
        value = int(raw) if setting.kind is int else float(raw)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
        noun = "a whole number" if setting.kind is int else "a number"
        raise ValueError(f"{setting.title} must be {noun}, got {raw!r}.") from None
    return None if setting.optional and value == setting.off else value


def app_seed(raw: Any) -> int:
    """The seed control's value: a negative one (-1) or none means a fresh random seed (which the app reports)."""
    seed = setting_value(SEED, raw)
    if seed is None or seed < 0:
        return secrets.randbelow(2**31)
    return SEED.check(seed, SEED.title)


def sampling_from_controls(values: Sequence[Any], sampling: type[Sampling] = Sampling) -> tuple[int, Sampling]:
    """The seed and the :class:`Sampling` of the controls' values (the seed first, then one per setting, as
    :func:`sampling_controls` returns them); a bad value is a ValueError naming its control."""
    raw_seed, *raws = values
    settings = sampling.settings()
    if len(raws) != len(settings):
        raise ValueError(f"Expected {len(settings)} sampling values after the seed, got {len(raws)}.")
    chosen = sampling.from_values({s.name: setting_value(s, raw) for s, raw in zip(settings, raws)},
                                  label=lambda s: s.title)
    return app_seed(raw_seed), chosen


def _label(setting: Setting) -> str:
    """A control's label: its title, and what its off value means ("Top-k (0: off)")."""
    if setting.optional and not setting.choices:
        return f"{setting.title} ({setting.off:g}: {setting.none_means})"
    return setting.title


def seed_control() -> gr.Number:
    """The seed's box (-1: a random seed)."""
    return gr.Number(value=SEED.off, precision=0, label=_label(SEED), info=SEED.help)


def _control(setting: Setting, value: Any, info: str) -> gr.components.Component:
    shown = control_value(setting, value)
    if _is_checkbox(setting):
        return gr.Checkbox(value=shown, label=_label(setting), info=info)
    if setting.choices:
        return gr.Dropdown([setting.none_means, *setting.choices] if setting.optional else list(setting.choices),
                           value=shown, label=_label(setting), info=info)
    if setting.slider is not None or (setting.low is not None and setting.high is not None):
        low, high, step = setting.slider or (setting.low, setting.high, 1 if setting.kind is int else 0.01)
        return gr.Slider(low, high, value=shown, step=step, label=_label(setting), info=info)
    return gr.Number(value=shown, precision=0 if setting.kind is int else None, label=_label(setting), info=info)


def sampling_controls(values: Mapping[str, Any] | None = None,
                      sampling: type[Sampling] = Sampling) -> list[gr.components.Component]:
    """The "Advanced sampling" accordion: the seed, then one control per setting of ``sampling``; returns them
    in that order (the inputs of a :func:`takes_sampling_controls` handler). ``values``: initial values other
    than the settings' defaults (by setting name)."""
    values = values or {}
    settings = sampling.settings()
    numbers = [s for s in settings if not _is_checkbox(s)]
    controls: dict[str, gr.components.Component] = {}

    def add(setting: Setting) -> None:
        info = sampling.help_of(setting, _quoted_title)
        controls[setting.name] = _control(setting, values.get(setting.name, setting.default), info)

    with gr.Accordion("Advanced sampling", open=False):
        seed = seed_control()
        for start in range(0, len(numbers), PER_ROW):
            with gr.Row():
                for setting in numbers[start:start + PER_ROW]:
                    add(setting)
        with gr.Row():
            for setting in settings:
                if _is_checkbox(setting):
                    add(setting)
    return [seed, *(controls[s.name] for s in settings)]


def takes_sampling_controls(sampling: type[Sampling] = Sampling) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate ``handler(*inputs, seed, sampling, **rest)``: Gradio then calls it with the controls of
    :func:`sampling_controls` after ``inputs``, one parameter each, named after the settings (``seed, temperature,
    top_k, ...``, defaults as the controls start), and ``handler`` gets the seed and the :class:`Sampling` they
    make (:func:`sampling_from_controls`). Its signature says so, for Gradio's API page and clients."""
    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        parameters = list(inspect.signature(handler).parameters.values())
        at = [p.name for p in parameters].index("seed")
        if parameters[at + 1].name != "sampling":
            raise TypeError(f"{handler.__name__} must take (..., seed, sampling, ...).")
        inputs, rest = parameters[:at], parameters[at + 2:]
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        controls = [inspect.Parameter(SEED.name, kind, default=SEED.off)] + [
            inspect.Parameter(s.name, kind, default=control_value(s, s.default)) for s in sampling.settings()]
        exposed = inspect.Signature([*inputs, *controls, *rest])

        @functools.wraps(handler)
        def with_controls(*args: Any, **kwargs: Any) -> Any:
            bound = exposed.bind(*args, **kwargs)
            bound.apply_defaults()
            given = bound.arguments
            seed, chosen = sampling_from_controls([given[p.name] for p in controls], sampling)
            return handler(*(given[p.name] for p in inputs), seed, chosen, **{p.name: given[p.name] for p in rest})

        with_controls.__signature__ = exposed  # type: ignore[attr-defined]
        return with_controls
    return decorate
