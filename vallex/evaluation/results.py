"""The scores of one evaluation line: what the runner measures and the report aggregates and writes."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LineResult:
    """The scores of one evaluation line; None where a value could not be measured (see ``notes``)."""

    id: str
    language: str
    prompt_language: str | None
    metric: str  # "wer" | "cer"
    text: str
    prompt_audio: str
    output_audio: str | None = None
    reference_audio: str | None = None
    duration_s: float | None = None  # output length in seconds
    synth_s: float | None = None  # wall-clock seconds of synthesize_detailed (None: audio was given)
    rtf: float | None = None  # synth_s / duration_s
    sim_prompt: float | None = None  # resemblyzer cosine, output vs prompt
    sim_reference: float | None = None  # resemblyzer cosine, output vs reference recording
    sim_prompt_wavlm: float | None = None  # WavLM x-vector cosine, output vs prompt
    asr_text: str | None = None
    errors: int | None = None  # S + D + I
    ref_tokens: int | None = None  # N (words for en, characters for zh/ja)
    error_rate: float | None = None  # errors / ref_tokens
    reference_error_rate: float | None = None  # the same for the reference recording (ASR floor)
    notes: list[str] = field(default_factory=list)

    @property
    def direction(self) -> str:
        """``"<prompt language>-><text language>"``, e.g. ``"zh->en"`` (cross-lingual) or ``"en->en"``."""
        return f"{self.prompt_language or '?'}->{self.language}"
