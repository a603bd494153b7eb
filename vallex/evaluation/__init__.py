"""Evaluation of VALL-E X the way the paper and Seed-TTS-eval measure it.

Speaker similarity (Resemblyzer, offline; WavLM when its weights are on disk), WER (English) / CER
(Mandarin, Japanese) of an ASR transcript, output duration and real-time factor, over a JSONL list or a
Seed-TTS-eval ``meta.lst``. ``vallex eval`` runs it; the recipe and the exact definitions are in
``vallex/evaluation/README.md``.

    from vallex.evaluation import read_eval_list, build_setup, run_evaluation
    items = read_eval_list("eval/cross_lingual.jsonl")
    rows, files = run_evaluation(items, "out/", build_setup(asr="auto"), tts=VallEX.from_pretrained())
"""
from vallex.evaluation.asr import ASR_CHOICES, AsrEngine, load_asr
from vallex.evaluation.error_rate import (
    ErrorCounts,
    error_counts,
    error_rate,
    metric_for,
    normalize_text,
    pooled,
    tokens_for_scoring,
)
from vallex.evaluation.eval_list import EvalItem, read_eval_list, read_jsonl_list, read_seedtts_list
from vallex.evaluation.report import aggregates, write_report
from vallex.evaluation.results import LineResult
from vallex.evaluation.runner import EvalSetup, build_setup, evaluate_items, run_evaluation
from vallex.evaluation.speaker import (
    ResemblyzerVerifier,
    VerifierUnavailableError,
    WavLMVerifier,
    cosine,
    speaker_similarity,
)

__all__ = [
    "ASR_CHOICES", "AsrEngine", "load_asr", "ErrorCounts", "error_counts", "error_rate", "metric_for",
    "normalize_text", "pooled", "tokens_for_scoring", "EvalItem", "read_eval_list", "read_jsonl_list",
    "read_seedtts_list", "aggregates", "write_report", "EvalSetup", "LineResult", "build_setup",
    "evaluate_items", "run_evaluation", "ResemblyzerVerifier", "VerifierUnavailableError", "WavLMVerifier",
    "cosine", "speaker_similarity",
]
