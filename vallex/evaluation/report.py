"""Aggregate per-line results and write them as CSV, JSON and a Markdown table.

Aggregates are computed per group: every line (``all``), each target language, and each direction
``<prompt language>-><text language>`` (``zh->en`` and ``en->zh`` are the paper's cross-lingual sets).

* ``lines``: lines in the group; ``lines_failed``: lines without audio (synthesis failed or file missing).
* ``sim_*_mean``: arithmetic mean over the lines that have the value.
* ``error_rate_pooled``: sum(S + D + I) / sum(N) over the lines (corpus-level WER/CER, as LibriSpeech
  results are usually given); ``error_rate_mean``: mean of per-line rates (Seed-TTS-eval's number).
  Both are left empty for a group that mixes WER and CER lines.
* ``rtf_overall``: sum(synthesis seconds) / sum(output seconds); ``rtf_mean``: mean of per-line RTFs.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from vallex.evaluation.results import LineResult
from vallex.files import atomic_open, make_folder, write_text_atomic

#: Column order of ``results.csv`` (every column is always present; empty cell = not measured).
CSV_COLUMNS = (
    "id", "direction", "prompt_language", "language", "metric", "text", "asr_text", "errors", "ref_tokens",
    "error_rate", "reference_error_rate", "sim_prompt", "sim_prompt_wavlm", "sim_reference", "duration_s",
    "synth_s", "rtf", "prompt_audio", "reference_audio", "output_audio", "notes",
)
AGGREGATE_COLUMNS = (
    "group", "lines", "lines_failed", "metric", "error_rate_pooled", "error_rate_mean", "reference_error_rate_mean",
    "sim_prompt_mean", "sim_prompt_wavlm_mean", "sim_reference_mean", "duration_s_mean", "rtf_overall",
    "rtf_mean",
)


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None and math.isfinite(v)]
    return sum(present) / len(present) if present else None


def aggregate(rows: list[LineResult], group: str) -> dict[str, Any]:
    """The aggregate row of ``rows`` (see the module docstring for the definitions)."""
    metrics = sorted({row.metric for row in rows})
    single = len(metrics) == 1
    scored = [row for row in rows if row.errors is not None]
    pooled = (sum(row.errors for row in scored) / sum(row.ref_tokens for row in scored)
              if single and scored else None)
    timed = [row for row in rows if row.synth_s is not None and row.duration_s]
    return {
        "group": group,
        "lines": len(rows),
        "lines_failed": sum(1 for row in rows if row.duration_s is None),  # no audio (see the line's notes)
        "metric": metrics[0] if single else "+".join(metrics),
        "error_rate_pooled": pooled,
        "error_rate_mean": _mean([row.error_rate for row in rows]) if single else None,
        "reference_error_rate_mean": _mean([row.reference_error_rate for row in rows]) if single else None,
        "sim_prompt_mean": _mean([row.sim_prompt for row in rows]),
        "sim_prompt_wavlm_mean": _mean([row.sim_prompt_wavlm for row in rows]),
        "sim_reference_mean": _mean([row.sim_reference for row in rows]),
        "duration_s_mean": _mean([row.duration_s for row in rows]),
        "rtf_overall": (sum(row.synth_s for row in timed) / sum(row.duration_s for row in timed)) if timed else None,
        "rtf_mean": _mean([row.rtf for row in rows]),
    }


def aggregates(rows: list[LineResult]) -> list[dict[str, Any]]:
    """Aggregate rows for ``all``, each language (``lang=xx``) and each direction (``zh->en`` ...)."""
    groups: dict[str, list[LineResult]] = {"all": list(rows)}
    for row in rows:
        groups.setdefault(f"lang={row.language}", []).append(row)
    for row in rows:
        groups.setdefault(row.direction, []).append(row)
    return [aggregate(members, name) for name, members in groups.items()]


def _row_dict(row: LineResult) -> dict[str, Any]:
    data = asdict(row)
    data["direction"] = row.direction
    return {column: data[column] for column in CSV_COLUMNS}


def _cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}f}"
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    return str(value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_report(rows: list[LineResult], out_dir: str | Path, info: dict[str, Any]) -> dict[str, Path]:
    """Write ``results.csv``, ``results.json`` and ``report.md`` into ``out_dir``; return their paths.

    ``info``: run facts for the header (model, weights, seed, ASR and verifier labels, ``unavailable``:
    {column: reason} for every metric column that is empty for the whole run).
    """
    out = Path(out_dir)
    make_folder(out)
    summary = aggregates(rows)
    paths = {"csv": out / "results.csv", "json": out / "results.json", "markdown": out / "report.md"}
    with atomic_open(paths["csv"], "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow([_cell(value, 6) for value in _row_dict(row).values()])
    document = {"info": info, "aggregate": summary, "lines": [_row_dict(row) for row in rows]}
    write_text_atomic(paths["json"], json.dumps(_json_safe(document), ensure_ascii=False, indent=1) + "\n")
    write_text_atomic(paths["markdown"], markdown_report(rows, summary, info))
    return paths


def _table(header: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    escape = lambda text: text.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(escape(cell) for cell in row) + " |" for row in rows]
    return lines


def markdown_report(rows: list[LineResult], summary: list[dict[str, Any]], info: dict[str, Any]) -> str:
    """The report as Markdown: run facts, unavailable columns with reasons, aggregate and per-line tables."""
    lines = ["# VALL-E X evaluation", ""]
    for key in ("model", "weights", "decoding", "seed", "speaker_verifier", "asr", "eval_list", "started"):
        if info.get(key) is not None:
            lines.append(f"- {key}: {info[key]}")
    for warning in info.get("warnings", []):
        lines.append(f"- **warning**: {warning}")
    unavailable = info.get("unavailable", {})
    if unavailable:
        lines += ["", "## Empty columns", ""]
        lines += [f"- `{column}`: {reason}" for column, reason in unavailable.items()]
    lines += ["", "## Aggregate", ""]
    lines += _table(AGGREGATE_COLUMNS, [[_cell(item[c]) for c in AGGREGATE_COLUMNS] for item in summary])
    columns = ("id", "direction", "metric", "error_rate", "sim_prompt", "sim_prompt_wavlm", "sim_reference",
               "duration_s", "rtf", "asr_text", "notes")
    lines += ["", "## Lines", ""]
    lines += _table(columns, [[_cell(_row_dict(row)[c]) for c in columns] for row in rows])
    lines += ["", "Metric definitions: vallex/evaluation/README.md.", ""]
    return "\n".join(lines)
