"""How far each reduced precision's predictions are from float32 (teacher forcing), and how far streamed
codes are from the whole sentence's.

    .venv/bin/python bench/fidelity.py                      # full-size random model + tiny trained model
    .venv/bin/python bench/fidelity.py --peaked golden      # golden checkpoint as the small model
    .venv/bin/python bench/fidelity.py --json bench/fidelity.json
    .venv/bin/python bench/fidelity.py --device cuda --precisions bfloat16,float16 --models full  # GPU
    .venv/bin/python bench/fidelity.py --part streaming --precisions float32,int8   # streamed vs whole only

Every precision sees exactly the same inputs as float32 (teacher forcing): the AR goes through the real
cached decoding path (:func:`vallex.inference.ar.ar_decode`, one frame per step, with a ``logits_processor``
that records the logits and then forces the reference token), so int8's per-call activation scales are
those of inference; each NAR stage gets the true codes of the earlier codebooks. Reported per model and
precision: top-1 agreement with float32 (AR over every step incl. the EOS position; NAR over all 7
stages), and the max / mean absolute logit deviation, next to the float32 logits' standard deviation for
scale.

``--device cuda`` runs float32 and each precision on the GPU (its float32 is the reference there): the
comparison behind ``auto``'s GPU choice (bfloat16 from compute capability 8.0 on, float16 before;
:func:`vallex.inference.precision.cuda_auto_precision`). It has not been run by the project yet (no GPU), so no GPU rows
exist in bench/README.md.

Models:
* ``full``: the public checkpoint's shape with random weights (seed 0): text 80 tokens, 225-frame prompt,
  300 teacher-forced random frames, as bench/inference.py. Random weights give flat predictions (logit
  gaps between the top two classes are tiny), so this is the *worst case* for agreement.
* ``peaked`` (``--peaked train``, default): the tiny model of tests/test_training_e2e.py, trained here with
  the same recipe (20 espeak-ng utterances, AR 300 steps then NAR 150 steps, ~1 min) and teacher-forced on
  its own training utterances, whose predictions are peaked like a trained model's. ``--peaked golden``
  uses the golden fixture checkpoint and its cases instead (random weights, small).

Streaming (``--part streaming``; ``all``, the default, runs both parts): a streamed sentence's codebooks 2-8
come from NAR passes over chunks (:class:`vallex.synthesis.streaming.SentencePieces`: one whole pass, then
windows), a whole sentence's from one pass over every frame. For each model, each precision (float32 and
``--precisions``) and each first chunk (``--chunk-seconds``), the sentences' codebook 0 is replayed through
:class:`~vallex.synthesis.streaming.SentencePieces` and :func:`vallex.inference.nar.nar_decode` as the
scheduler drives them (exact chunks), and the share of codebook 2-8 codes that differ from the same
precision's whole-sentence codes is reported per codebook, with two yardsticks measured in the same run: the
previous streaming (every pass whole: text, prompt and all frames so far) and, for reduced precisions, their
whole-sentence codes against float32's. Inputs: the tiny trained model's utterances, each spoken with the next
one as its prompt (as inference does: prompt transcript + target text, the prompt's 8 codebooks); the full-size
random model with the workload's text and 3 s prompt and, as codebook 0, real speech: the first 300 frames of
the reference's voice presets (bench/data/presets). The script fails (exit status 1) when a row exceeds
:data:`STREAMING_BOUNDS`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from inference import workload, write_random_checkpoint  # noqa: E402

from vallex.audio.codec_format import CODEBOOK_SIZE, HOP, NUM_CODEBOOKS  # noqa: E402
from vallex.files import write_text_atomic  # noqa: E402
from vallex.inference.ar import ar_decode  # noqa: E402
from vallex.inference.cpu_features import cpu_features  # noqa: E402
from vallex.inference.generation import language_ids  # noqa: E402
from vallex.inference.nar import NARInput, nar_decode  # noqa: E402
from vallex.inference.precision import apply_precision, kernel_plan, kernels_in_use, normalize_precision  # noqa: E402
from vallex.model import VallexModel  # noqa: E402
from vallex.synthesis.streaming import SentencePieces, first_chunk_frames  # noqa: E402
from vallex.weights.checkpoint import load_model  # noqa: E402

#: The most a streamed sentence's codebook 2-8 codes may differ from the whole sentence's (share of codes, in
#: any one codebook), per model: what bench/README.md states and this script holds. The trained model's
#: predictions are peaked like a real model's. The full-size random model's are flat, so any change in what a
#: frame sees flips many of them: its bound is a check that nothing is broken, not a quality figure. The golden
#: checkpoint's tiny random weights are flatter still (even whole passes over each chunk moved 22-42 % of its
#: codes): reported, not bounded.
STREAMING_BOUNDS: dict[str, float | None] = {"tiny, trained (e2e recipe)": 0.02, "full-size, random weights": 0.20,
                                             "golden checkpoint (tiny, random)": None}
STREAM_PRESET_FRAMES = 300  # 4 s of each preset's codebook 0 for the full-size model
STREAM_PRESETS = 3


@dataclass
class Example:
    """One teacher-forcing input: text/langs [1, S], prompt [1, P, 8], target codes [1, T, 8]."""

    text: torch.Tensor
    langs: torch.Tensor
    prompt: torch.Tensor
    target: torch.Tensor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("all", "precision", "streaming"), default="all",
                        help="precision: reduced precisions vs float32; streaming: streamed vs whole-sentence codes")
    parser.add_argument("--precisions", default="bfloat16,float16,int8", help="comma-separated, vs float32")
    parser.add_argument("--chunk-seconds", default="0.2,0.4",
                        help="first chunks of the streaming part (comma-separated seconds; 0.4 is the default)")
    parser.add_argument("--models", default="full,peaked", help="full and/or peaked")
    parser.add_argument("--peaked", choices=("train", "golden"), default="train",
                        help="the small peaked model: trained here (train) or the golden checkpoint")
    parser.add_argument("--checkpoint", type=Path, help="full-size .safetensors (default: random, seed 0)")
    parser.add_argument("--golden", type=Path, default=Path(os.environ.get(
        "VALLEX_GOLDEN_DIR", REPO / "tests" / "golden" / "public")))
    parser.add_argument("--frames", type=int, default=300, help="teacher-forced frames of the full model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu",
                        help="cpu (default) or cuda: float32 and every precision run there (int8: CPU only)")
    parser.add_argument("--work-dir", type=Path, help="keep the trained tiny model here (default: temporary)")
    parser.add_argument("--json", type=Path, help="write the table here")
    parser.add_argument("--cpu-class", default=None,
                        help="use this CPU class's kernel plan (vallex.inference.precision.CPU_KERNEL_TABLE; "
                             "default: this machine's), e.g. x86-amx to check the AMX plan's numerics on another "
                             "x86 CPU")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    precisions = [normalize_precision(p) for p in args.precisions.split(",") if p.strip()]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU here.")
    if device.type != "cpu" and "int8" in precisions:
        parser.error("int8 runs on CPU only: leave it out of --precisions with --device cuda.")

    rows: list[dict] = []
    stream_rows: list[dict] = []
    chunks = [float(c) for c in args.chunk_seconds.split(",") if c.strip()]
    with tempfile.TemporaryDirectory(prefix="vallex-fidelity-") as tmp:
        work = args.work_dir or Path(tmp)
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            if name == "full":
                checkpoint = args.checkpoint or write_random_checkpoint(work / "vallex-random.safetensors")
                text, langs, prompt = workload(torch.device("cpu"))
                target = torch.randint(0, CODEBOOK_SIZE, (1, args.frames, NUM_CODEBOOKS),
                                       generator=torch.Generator().manual_seed(7))
                examples = [Example(text, langs, prompt, target)]
                label = "full-size, random weights"
                stream_examples = preset_examples(text, langs, prompt)
            elif name == "peaked":
                if args.peaked == "train":
                    checkpoint, examples = train_tiny_model(work)
                    label = "tiny, trained (e2e recipe)"
                    stream_examples = prompted_examples(examples)
                else:
                    checkpoint, examples = golden_examples(args.golden)
                    label = "golden checkpoint (tiny, random)"
                    stream_examples = examples
            else:
                raise ValueError(f"Unknown model {name!r}: expected 'full' or 'peaked'.")
            if args.part in ("all", "precision"):
                rows += compare(checkpoint, examples, precisions, label, args.cpu_class, device)
            if args.part in ("all", "streaming"):
                stream_precisions = list(dict.fromkeys(["float32", *precisions]))
                stream_rows += compare_streaming(checkpoint, stream_examples, stream_precisions, chunks, label,
                                                 args.cpu_class, device)
    exceeded = [r for r in stream_rows if r["bound"] is not None and r["max_differ"] > r["bound"]]
    if rows:
        print()
        print(format_table(rows))
    if stream_rows:
        print()
        print(format_streaming_table(stream_rows))
    for row in exceeded:
        print(f"BOUND EXCEEDED: {row['model']} {row['precision']} first chunk {row['chunk_seconds']} s: "
              f"{row['max_differ']:.2%} of one codebook's codes differ from the whole sentence's "
              f"(bound {row['bound']:.0%})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
        write_text_atomic(args.json, json.dumps({"rows": rows, "streaming": stream_rows, "threads": args.threads,
                                                 "torch": torch.__version__, "device": str(device), "gpu": gpu,
                                                 "cpu": cpu_features().as_dict()}, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return 1 if exceeded else 0


# Models and inputs ---------------------------------------------------------------------------------------
def train_tiny_model(work: Path) -> tuple[Path, list[Example]]:
    """The tiny model of tests/test_training_e2e.py, trained with the same recipe, and its utterances."""
    from vallex.cli import main as cli_main
    from vallex.training.dataset import CodesDataset
    from vallex.training.espeak_corpus import ENGLISH_SENTENCES, MANDARIN_SENTENCES, write_espeak_corpus
    from vallex.training.trainer import TrainConfig, train

    start = time.perf_counter()
    final = work / "nar" / "final.safetensors"
    if not (work / "prep").is_dir():
        write_espeak_corpus(work / "raw", {"en": ENGLISH_SENTENCES, "zh": MANDARIN_SENTENCES})
        if cli_main(["prepare-data", "--folder", str(work / "raw"), "--out", str(work / "prep"),
                     "--random-codec", "--no-progress"]) != 0:
            raise RuntimeError("prepare-data failed")
    data = CodesDataset(work / "prep")
    if not final.is_file():
        (work / "model.json").write_text(json.dumps({"d_model": 128, "nhead": 4, "num_layers": 2}), encoding="utf-8")
        common = dict(data=str(work / "prep"), batch_size=4, warmup_steps=20, dropout=0.0, valid_fraction=0.0,
                      log_every=50, valid_every=10_000, save_every=10_000, num_threads=1)
        ar = train(TrainConfig(out_dir=str(work / "ar"), model=str(work / "model.json"), stage="ar",
                               max_steps=300, lr=3e-3, **common))
        nar = train(TrainConfig(out_dir=str(work / "nar"), init_checkpoint=str(ar.last_checkpoint), stage="nar",
                                max_steps=150, lr=2e-3, **common))
        from vallex.weights.checkpoint import save_checkpoint

        save_checkpoint(load_model(nar.last_checkpoint), final)
        print(f"trained the tiny model in {time.perf_counter() - start:.0f} s", flush=True)
    examples = []
    for i in range(len(data)):
        utt = data[i]
        no_prompt = torch.zeros(1, 0, NUM_CODEBOOKS, dtype=torch.long)
        examples.append(Example(torch.from_numpy(utt.text)[None].long(), torch.from_numpy(utt.langs)[None].long(),
                                no_prompt, torch.from_numpy(utt.codes)[None].long()))
    return final, examples


def golden_examples(golden: Path) -> tuple[Path, list[Example]]:
    """The golden checkpoint (as safetensors) and its cases' inputs with their reference output codes."""
    config_path = golden / "config.json"
    from vallex.config import VallexConfig
    from vallex.weights.checkpoint import save_checkpoint

    model = load_model(golden / "checkpoint.pt", VallexConfig.from_json(config_path))
    path = Path(tempfile.mkdtemp(prefix="vallex-golden-")) / "golden.safetensors"
    save_checkpoint(model, path)
    examples = []
    for case in json.loads((golden / "cases.json").read_text(encoding="utf-8"))["cases"]:
        inputs, outputs = case["inputs"], case["outputs"]
        text = torch.tensor(inputs["text_tokens"], dtype=torch.long)
        prompt = torch.tensor(inputs["audio_prompts"], dtype=torch.long).reshape(inputs["audio_prompts_shape"])
        codes = torch.tensor(outputs["codes"], dtype=torch.long).reshape(outputs["codes_shape"])
        if codes.shape[1] == 0:
            continue
        langs = language_ids(text.shape[1], int(inputs["enroll_x_lens"]), inputs["prompt_language"],
                             inputs["text_language"])[None]
        examples.append(Example(text, langs, prompt, codes))
    return path, examples


def prompted_examples(examples: list[Example]) -> list[Example]:
    """Each utterance spoken with the next one as its prompt: text = prompt transcript + target text."""
    out = []
    for i, target in enumerate(examples):
        prompt = examples[(i + 1) % len(examples)]
        out.append(Example(torch.cat([prompt.text, target.text], dim=1), torch.cat([prompt.langs, target.langs], dim=1),
                           prompt.target, target.target))
    return out


def preset_examples(text: torch.Tensor, langs: torch.Tensor, prompt: torch.Tensor) -> list[Example]:
    """The workload's text and prompt with real speech's codebook 0 (the first presets of >= 300 frames);
    codebooks 2-8 of the target are unknown (zeros): nothing compares against them."""
    from presets_data import load_presets

    long_enough = [p for p in load_presets() if len(p.codes) >= STREAM_PRESET_FRAMES][:STREAM_PRESETS]
    examples = []
    for preset in long_enough:
        target = torch.zeros(1, STREAM_PRESET_FRAMES, NUM_CODEBOOKS, dtype=torch.long)
        target[0, :, 0] = torch.from_numpy(preset.codes[:STREAM_PRESET_FRAMES].astype("int64"))
        examples.append(Example(text, langs, prompt, target))
    return examples


# Streaming ------------------------------------------------------------------------------------------------
class _Silence:
    """Stands in for the codec: the streaming measure compares codes, so every piece is silence of its length."""

    def decode_codes_window(self, codes: torch.Tensor, start: int, end: int) -> np.ndarray:
        return np.zeros(HOP * (end - start), dtype=np.float32)


def streamed_codes(model: VallexModel, ex: Example, chunk_seconds: float, windows: bool = True) -> torch.Tensor:
    """Codes [1, T, 8] of ``ex`` streamed as the scheduler streams it alone (exact chunks): after each frame of
    codebook 0, a due chunk runs the NAR (:meth:`SentencePieces.nar_input`), then the sentence is finished.
    ``windows=False``: every pass whole (text, prompt and all frames so far), the previous streaming."""
    codes0 = ex.target[..., 0]
    frames = codes0.shape[1]
    pieces = SentencePieces(_Silence(), first_chunk_frames(chunk_seconds))

    def nar(n: int, final: bool) -> torch.Tensor:
        whole = NARInput(ex.text, ex.langs, ex.prompt, codes0[:, :n])
        return nar_decode(model, [pieces.nar_input(whole, final=final) if windows else whole])[0]

    for n in range(1, frames + 1):
        if pieces.due(n):
            pieces.chunk(nar(n, final=False))
    codes, _ = pieces.finish(nar(frames, final=True) if pieces.needs_final_nar(frames) else None)
    return codes


def differ(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[float]:
    """Share of codebook 2-8 codes that differ between two lists of codes [1, T, 8], per codebook (7 values)."""
    different = sum((x[0, :, 1:] != y[0, :, 1:]).sum(0) for x, y in zip(a, b))
    return [round(v, 5) for v in (different / sum(x.shape[1] for x in a)).tolist()]


def compare_streaming(checkpoint: Path, examples: list[Example], precisions: list[str], chunks: list[float],
                      label: str, cpu_class: str | None = None,
                      device: torch.device = torch.device("cpu")) -> list[dict]:
    """Per precision and first chunk: streamed vs whole-sentence codes (and the yardsticks, module docstring)."""
    rows = []
    examples = [Example(*(t.to(device) for t in (e.text, e.langs, e.prompt, e.target))) for e in examples]
    whole_float32 = None
    for precision in precisions:
        plan = kernel_plan(precision, device, cpu_class)
        model = load_model(checkpoint).to(device)
        model = apply_precision(model, precision, device, plan=plan)  # as inference runs it, float32 included
        whole = [nar_decode(model, [NARInput(e.text, e.langs, e.prompt, e.target[..., 0])])[0] for e in examples]
        if precision == "float32":
            whole_float32 = whole
        for chunk_seconds in chunks:
            start = time.perf_counter()
            streamed = [streamed_codes(model, e, chunk_seconds) for e in examples]
            previous = [streamed_codes(model, e, chunk_seconds, windows=False) for e in examples]
            for s, w in zip(streamed, whole):
                if not torch.equal(s[..., 0], w[..., 0]):
                    raise RuntimeError("streaming changed codebook 0, which only the AR may set")
            per_codebook = differ(streamed, whole)
            row = {"model": label, "precision": precision, "chunk_seconds": chunk_seconds, "examples": len(examples),
                   "frames": sum(e.target.shape[1] for e in examples), "cpu_class": plan.cpu_class,
                   "differ_per_codebook": per_codebook, "mean_differ": round(sum(per_codebook) / len(per_codebook), 5),
                   "max_differ": max(per_codebook), "bound": STREAMING_BOUNDS[label],
                   "previous_streaming_mean_differ": round(sum(differ(previous, whole)) / len(per_codebook), 5),
                   "whole_vs_float32_mean_differ": (None if whole_float32 is None or precision == "float32" else
                                                    round(sum(differ(whole, whole_float32)) / len(per_codebook), 5))}
            rows.append(row)
            print(f"{label} {precision} first chunk {chunk_seconds} s: streamed codes differ from the whole sentence's "
                  f"in {row['mean_differ']:.2%} (worst codebook {row['max_differ']:.2%}; every pass whole "
                  f"{row['previous_streaming_mean_differ']:.2%}) ({time.perf_counter() - start:.0f} s)", flush=True)
        del model
    return rows


def format_streaming_table(rows: list[dict]) -> str:
    header = ["model", "precision", "first chunk s", "differ", "worst codebook", "bound", "every pass whole",
              "whole vs float32", "per codebook 2-8"]
    body = [[r["model"], r["precision"], f"{r['chunk_seconds']:g}", f"{r['mean_differ']:.2%}", f"{r['max_differ']:.2%}",
             "-" if r["bound"] is None else f"{r['bound']:.0%}", f"{r['previous_streaming_mean_differ']:.2%}",
             "-" if r["whole_vs_float32_mean_differ"] is None else f"{r['whole_vs_float32_mean_differ']:.2%}",
             " ".join(f"{v:.1%}" for v in r["differ_per_codebook"])] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths)) for b in body]
    lines.append("differ = share of codebook 2-8 codes of the streamed sentences that differ from the same precision's "
                 "whole-sentence codes; every pass whole = the same for the previous streaming; whole vs float32 = "
                 "this precision's whole-sentence codes against float32's")
    return "\n".join(lines)


# Teacher forcing ------------------------------------------------------------------------------------------
@torch.inference_mode()
def teacher_forced_logits(model: VallexModel, ex: Example) -> tuple[torch.Tensor, torch.Tensor]:
    """AR logits [T+1, V_ar] along the cached decoding path, NAR logits [7, T, V] (float32, CPU).

    The example's tensors are moved to the model's device first.
    """
    cfg = model.config
    device = next(model.parameters()).device
    ex = Example(*(t.to(device) for t in (ex.text, ex.langs, ex.prompt, ex.target)))
    target = ex.target
    frames = target.shape[1]
    forced = target[0, :, 0].tolist() + [cfg.eos_id]
    recorded: list[torch.Tensor] = []

    def force(step: int, logits: torch.Tensor) -> torch.Tensor:
        recorded.append(logits[0].float().cpu())
        out = torch.full_like(logits, -1e4)
        out[:, forced[step]] = 1e4
        return out

    ar_decode(model, ex.text, ex.langs, ex.prompt[..., 0], min_frames=frames, max_frames=frames,
              logits_processor=force)
    ar_logits = torch.stack(recorded)  # [T+1, 1025]

    prompt_len = ex.prompt.shape[1]
    text_emb = model.embed_text("nar", ex.text, ex.langs)
    emb = model.nar_audio_embeddings[0](torch.cat([ex.prompt[..., 0], target[..., 0]], dim=1))
    prompt_part = emb[:, :prompt_len]
    for j in range(1, cfg.num_quantizers):
        prompt_part = prompt_part + model.nar_audio_embeddings[j](ex.prompt[..., j])
    target_part = emb[:, prompt_len:]
    nar_logits = []
    for stage in range(cfg.num_quantizers - 1):
        audio_emb = torch.cat([prompt_part, target_part], dim=1)
        hidden = model.nar_forward(text_emb, audio_emb, stage, output_start=prompt_len)
        nar_logits.append(model.nar_predict_layers[stage](hidden)[0].float().cpu())
        target_part = target_part + model.nar_audio_embeddings[stage + 1](target[..., stage + 1])
    return ar_logits, torch.stack(nar_logits)


def compare(checkpoint: Path, examples: list[Example], precisions: list[str], label: str,
            cpu_class: str | None = None, device: torch.device = torch.device("cpu")) -> list[dict]:
    reference = []
    model = load_model(checkpoint).to(device)
    for ex in examples:
        reference.append(teacher_forced_logits(model, ex))
    del model
    rows = []
    for precision in precisions:
        start = time.perf_counter()
        plan = kernel_plan(precision, device, cpu_class)
        model = apply_precision(load_model(checkpoint), precision, device, plan=plan)
        got = [teacher_forced_logits(model, ex) for ex in examples]
        kernels = kernels_in_use(model)
        del model
        row = {"model": label, "precision": precision, "device": device.type, "examples": len(examples),
               "cpu_class": plan.cpu_class, "kernels": kernels,
               "ar_positions": sum(r[0].shape[0] for r in reference),
               "nar_positions": sum(r[1].numel() // r[1].shape[-1] for r in reference)}
        for part, index in (("ar", 0), ("nar", 1)):
            ref = torch.cat([r[index].reshape(-1, r[index].shape[-1]) for r in reference])
            out = torch.cat([g[index].reshape(-1, g[index].shape[-1]) for g in got])
            deviation = (out - ref).abs()
            row[f"{part}_top1_agreement"] = round((out.argmax(-1) == ref.argmax(-1)).float().mean().item(), 4)
            row[f"{part}_max_abs_dev"] = round(deviation.max().item(), 4)
            row[f"{part}_mean_abs_dev"] = round(deviation.mean().item(), 5)
            row[f"{part}_fp32_logit_std"] = round(ref.std().item(), 4)
            top2 = ref.topk(2, dim=-1).values
            row[f"{part}_fp32_median_top2_gap"] = round((top2[:, 0] - top2[:, 1]).median().item(), 4)
        rows.append(row)
        print(f"{label} {precision}: AR top-1 {row['ar_top1_agreement']:.2%}, NAR top-1 "
              f"{row['nar_top1_agreement']:.2%} ({time.perf_counter() - start:.0f} s)", flush=True)
    return rows


def format_table(rows: list[dict]) -> str:
    header = ["model", "precision", "AR top-1", "AR max|d|", "AR mean|d|", "AR std", "AR gap",
              "NAR top-1", "NAR max|d|", "NAR mean|d|", "NAR std", "NAR gap"]
    body = []
    for r in rows:
        body.append([r["model"], r["precision"], f"{r['ar_top1_agreement']:.2%}", f"{r['ar_max_abs_dev']:.3f}",
                     f"{r['ar_mean_abs_dev']:.4f}", f"{r['ar_fp32_logit_std']:.2f}",
                     f"{r['ar_fp32_median_top2_gap']:.3f}",
                     f"{r['nar_top1_agreement']:.2%}", f"{r['nar_max_abs_dev']:.3f}", f"{r['nar_mean_abs_dev']:.4f}",
                     f"{r['nar_fp32_logit_std']:.2f}", f"{r['nar_fp32_median_top2_gap']:.3f}"])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(b, widths)) for b in body]
    lines.append("top-1 = share of positions whose argmax equals float32's; |d| = |logit - float32 logit|; "
                 "std = float32 logits' std; gap = median float32 gap between the two best logits")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
