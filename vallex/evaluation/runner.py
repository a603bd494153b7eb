"""Run an evaluation list: synthesise (or read) each line's audio and score it.

Per line: speaker similarity of output vs prompt (and vs the reference recording, when given), WER/CER of
the ASR transcript against the target text, output duration and real-time factor. A line that cannot be
synthesised or scored keeps empty cells and says why in its ``notes``; the run goes on.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vallex.audio.codec_format import SAMPLE_RATE
from vallex.audio.files import read_audio_file, save_audio
from vallex.audio.loading import load_audio
from vallex.audio.processing import resample
from vallex.evaluation.asr import AsrEngine
from vallex.evaluation.error_rate import ErrorCounts, error_counts, metric_for
from vallex.evaluation.eval_list import EvalItem
from vallex.evaluation.results import LineResult
from vallex.evaluation.speaker import ResemblyzerVerifier, SpeakerVerifier, cosine
from vallex.files import make_folder

#: File types looked for in ``--synthesized-dir`` (``<id><suffix>``), in this order.
SYNTHESIZED_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


@dataclass
class EvalSetup:
    """What scores a run: the verifiers, the ASR, and why any of them is missing."""

    verifier: SpeakerVerifier = field(default_factory=ResemblyzerVerifier)
    wavlm: SpeakerVerifier | None = None
    wavlm_reason: str = "WavLM verifier not requested"
    asr: AsrEngine | None = None
    asr_reason: str = "ASR not requested"
    seed: int = 0
    #: Decoding options of every line's synthesis (``synthesize_detailed``'s: top_p, ras, length_guards,
    #: best_of, verify, ...): compare decoding settings by running the same list with each.
    decoding: dict[str, Any] = field(default_factory=dict)


def _read_output(path: Path) -> np.ndarray:
    """A synthesised file as float32 [N] at 24 kHz (silence allowed, unlike :func:`load_audio`)."""
    data, rate = read_audio_file(path)
    if data.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0].astype(np.float32)
    return resample(np.ascontiguousarray(mono), rate, SAMPLE_RATE)


def find_synthesized(directory: Path, item_id: str) -> Path | None:
    """``<directory>/<id>.wav`` (or .flac, .ogg, .mp3), or None."""
    for suffix in SYNTHESIZED_SUFFIXES:
        candidate = directory / f"{item_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _detect_prompt_language(item: EvalItem) -> str | None:
    if item.prompt_language is not None:
        return item.prompt_language
    try:
        from vallex.text import detect_language

        return detect_language(item.prompt_text)
    except Exception:  # noqa: BLE001 - only a label for grouping; the row says "?" then
        return None


class _Embeddings:
    """Embeddings cache: a prompt shared by many lines is embedded once per verifier."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def of_file(self, verifier: SpeakerVerifier, path: Path) -> np.ndarray:
        key = (verifier.name, str(path.resolve()))
        if key not in self._cache:
            self._cache[key] = verifier.embed(load_audio(path))[0]
        return self._cache[key]


def evaluate_items(
    items: list[EvalItem],
    out_dir: str | Path,
    setup: EvalSetup,
    *,
    tts: Any = None,
    synthesized_dir: str | Path | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[LineResult]:
    """Score every item; synthesised audio is written to ``<out_dir>/audio/<id>.wav``.

    Args:
        items: from :func:`vallex.evaluation.read_eval_list`.
        out_dir: output folder (created).
        setup: verifiers and ASR.
        tts: a :class:`vallex.VallEX` to synthesise with (each line seeded with ``setup.seed``, so a line's
            audio does not depend on its position in the list); or
        synthesized_dir: a folder of already-synthesised ``<id>.wav`` files (then RTF is not measured).
    """
    if (tts is None) == (synthesized_dir is None):
        raise ValueError("Give either a model to synthesise with or a folder of synthesised audio, not both.")
    out = Path(out_dir)
    audio_dir = out / "audio"
    if tts is not None:
        make_folder(audio_dir)
    embeddings = _Embeddings()
    results = []
    for index, item in enumerate(items):
        if progress is not None:
            progress(index, len(items), item.id)
        results.append(_evaluate_one(item, setup, embeddings, tts, audio_dir,
                                     None if synthesized_dir is None else Path(synthesized_dir)))
    if progress is not None:
        progress(len(items), len(items), "")
    return results


def _evaluate_one(item: EvalItem, setup: EvalSetup, embeddings: _Embeddings, tts: Any, audio_dir: Path,
                  synthesized_dir: Path | None) -> LineResult:
    row = LineResult(id=item.id, language=item.language, prompt_language=_detect_prompt_language(item),
                     metric=metric_for(item.language), text=item.text, prompt_audio=str(item.prompt_audio),
                     reference_audio=None if item.reference_audio is None else str(item.reference_audio))
    if synthesized_dir is not None:
        wav = _given(item, row, synthesized_dir)
    else:
        wav = _synthesize(item, row, setup, tts, audio_dir)
    if wav is None:
        return row
    row.duration_s = len(wav) / SAMPLE_RATE
    if row.synth_s is not None and row.duration_s > 0:
        row.rtf = row.synth_s / row.duration_s
    if len(wav) < SAMPLE_RATE // 10:
        row.notes.append("output shorter than 0.1 s: nothing to score")
        return row
    _score_speaker(item, row, wav, setup, embeddings)
    _score_intelligibility(item, row, wav, setup)
    return row


def _synthesize(item: EvalItem, row: LineResult, setup: EvalSetup, tts: Any, audio_dir: Path) -> np.ndarray | None:
    try:
        prompt = tts.make_prompt(str(item.prompt_audio), item.prompt_text, item.prompt_language)
        row.prompt_language = prompt.language  # what the model was told (detected when not given)
        result = tts.synthesize_detailed(item.text, prompt, language=item.language, seed=setup.seed,
                                         **setup.decoding)
    except ValueError as error:  # bad prompt audio, text the front end cannot read, too long, ...
        row.notes.append(f"synthesis failed: {error}")
        return None
    wav = np.asarray(result.waveform, dtype=np.float32).reshape(-1)
    row.synth_s = float(result.timings["total_s"])
    path = audio_dir / f"{item.id}.wav"
    save_audio(path, wav, SAMPLE_RATE)
    row.output_audio = str(path)
    return wav


def _given(item: EvalItem, row: LineResult, synthesized_dir: Path) -> np.ndarray | None:
    path = find_synthesized(synthesized_dir, item.id)
    if path is None:
        row.notes.append(f"no synthesised file {item.id}.wav (or .flac/.ogg/.mp3) in {synthesized_dir}")
        return None
    row.output_audio = str(path)
    row.notes.append("audio given (--synthesized-dir): RTF not measured")
    try:
        return _read_output(path)
    except ValueError as error:
        row.notes.append(f"could not read the synthesised audio: {error}")
        return None


def _score_speaker(item: EvalItem, row: LineResult, wav: np.ndarray, setup: EvalSetup,
                   embeddings: _Embeddings) -> None:
    verifiers = [(setup.verifier, "sim_prompt")]
    if setup.wavlm is not None:
        verifiers.append((setup.wavlm, "sim_prompt_wavlm"))
    for verifier, column in verifiers:
        try:
            output, note = verifier.embed(wav)
            if note:
                row.notes.append(f"output: {note}")
            setattr(row, column, cosine(output, embeddings.of_file(verifier, item.prompt_audio)))
            if verifier is setup.verifier and item.reference_audio is not None:
                row.sim_reference = cosine(output, embeddings.of_file(verifier, item.reference_audio))
        except ValueError as error:
            row.notes.append(f"{verifier.name} similarity failed: {error}")


def _score_intelligibility(item: EvalItem, row: LineResult, wav: np.ndarray, setup: EvalSetup) -> None:
    asr = setup.asr
    if asr is None:
        return  # the reason is stated once for the whole report
    if not asr.supports(item.language):
        row.notes.append(f"ASR {asr.label} is English-only: no {row.metric.upper()} for {item.language}")
        return
    row.asr_text = _heard(asr, wav, item.language)
    try:
        counts: ErrorCounts = error_counts(item.text, row.asr_text, item.language)
        row.errors, row.ref_tokens, row.error_rate = counts.errors, counts.reference_length, counts.rate
        if item.reference_audio is not None:
            heard = _heard(asr, load_audio(item.reference_audio), item.language)
            row.reference_error_rate = error_counts(item.text, heard, item.language).rate
    except ValueError as error:
        row.notes.append(f"{row.metric.upper()} not computed: {error}")


def _heard(asr: AsrEngine, wav: np.ndarray, language: str) -> str:
    """Text heard in float32 samples [N] at 24 kHz, decoding forced to ``language`` ("" for no samples)."""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    return asr.recognize(wav, language=language, sample_rate=SAMPLE_RATE).text if wav.size else ""


def build_setup(*, asr: str = "auto", asr_model: str | None = None, wavlm: str | None = "auto",
                device: str = "cpu", seed: int = 0, decoding: dict[str, Any] | None = None) -> EvalSetup:
    """Load the scorers: Resemblyzer always; WavLM if ``wavlm`` ("auto" = the default model, or a folder /
    repository name) has weights on disk (``None`` disables it); the ASR chosen by ``asr``."""
    from vallex.evaluation.asr import load_asr
    from vallex.evaluation.speaker import VerifierUnavailableError, WavLMVerifier

    setup = EvalSetup(seed=seed, decoding=dict(decoding or {}))
    if wavlm is None:
        setup.wavlm_reason = "WavLM verifier disabled (--wavlm none)"
    else:
        candidate = WavLMVerifier(None if wavlm == "auto" else wavlm, device=device)
        try:
            candidate.load()
            setup.wavlm, setup.wavlm_reason = candidate, ""
        except VerifierUnavailableError as error:
            setup.wavlm_reason = str(error)
    setup.asr, setup.asr_reason = load_asr(asr, asr_model, device=device)
    return setup


def run_evaluation(
    items: list[EvalItem],
    out_dir: str | Path,
    setup: EvalSetup,
    *,
    tts: Any = None,
    synthesized_dir: str | Path | None = None,
    info: dict[str, Any] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> tuple[list[LineResult], dict[str, Path]]:
    """:func:`evaluate_items`, then the report files (``results.csv``, ``results.json``, ``report.md``)."""
    from vallex.evaluation.report import write_report

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    rows = evaluate_items(items, out_dir, setup, tts=tts, synthesized_dir=synthesized_dir, progress=progress)
    unavailable: dict[str, str] = {}
    if setup.asr is None:
        for column in ("asr_text", "errors", "ref_tokens", "error_rate", "reference_error_rate"):
            unavailable[column] = setup.asr_reason
    if setup.wavlm is None:
        unavailable["sim_prompt_wavlm"] = setup.wavlm_reason
    if all(item.reference_audio is None for item in items):
        unavailable["sim_reference"] = "no line of the list has reference_audio"
        unavailable.setdefault("reference_error_rate", "no line of the list has reference_audio")
    if tts is None:
        for column in ("synth_s", "rtf"):
            unavailable[column] = "audio was given (--synthesized-dir), not synthesised here"
    details = {
        "started": started,
        "seed": setup.seed if tts is not None else None,
        "speaker_verifier": setup.verifier.name + (f" + {setup.wavlm.name}" if setup.wavlm is not None else ""),
        "asr": setup.asr.label if setup.asr is not None else None,
        "asr_note": setup.asr_reason or None,
        "normalization": "vallex/evaluation/error_rate.py (NFKC, lower-case, punctuation/symbols removed; "
                         "en: words, zh/ja: characters)",
        "unavailable": unavailable,
        "warnings": [],
        **(info or {}),
    }
    if setup.asr is not None and setup.asr_reason:
        details["warnings"].append(setup.asr_reason)
    return rows, write_report(rows, out_dir, details)
