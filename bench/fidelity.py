"""How far each reduced precision's predictions are from float32, under teacher forcing.

    .venv/bin/python bench/fidelity.py                      # full-size random model + tiny trained model
    .venv/bin/python bench/fidelity.py --peaked golden      # golden checkpoint as the small model
    .venv/bin/python bench/fidelity.py --json bench/fidelity.json
    .venv/bin/python bench/fidelity.py --device cuda --precisions bfloat16,float16 --models full  # GPU

Every precision sees exactly the same inputs as float32 (teacher forcing): the AR goes through the real
cached decoding path (:func:`vallex.inference.decoding.ar_decode`, one frame per step, with a ``logits_processor``
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

import torch

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from inference import workload, write_random_checkpoint  # noqa: E402

from vallex.audio.codec_format import CODEBOOK_SIZE, NUM_CODEBOOKS  # noqa: E402
from vallex.files import write_text_atomic  # noqa: E402
from vallex.inference.cpu_features import cpu_features  # noqa: E402
from vallex.inference.decoding import ar_decode, language_ids  # noqa: E402
from vallex.inference.precision import apply_precision, kernel_plan, kernels_in_use, normalize_precision  # noqa: E402
from vallex.model import VallexModel  # noqa: E402
from vallex.weights.checkpoint import load_model  # noqa: E402


@dataclass
class Example:
    """One teacher-forcing input: text/langs [1, S], prompt [1, P, 8], target codes [1, T, 8]."""

    text: torch.Tensor
    langs: torch.Tensor
    prompt: torch.Tensor
    target: torch.Tensor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precisions", default="bfloat16,float16,int8", help="comma-separated, vs float32")
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
            elif name == "peaked":
                if args.peaked == "train":
                    checkpoint, examples = train_tiny_model(work)
                    label = "tiny, trained (e2e recipe)"
                else:
                    checkpoint, examples = golden_examples(args.golden)
                    label = "golden checkpoint (tiny, random)"
            else:
                raise ValueError(f"Unknown model {name!r}: expected 'full' or 'peaked'.")
            rows += compare(checkpoint, examples, precisions, label, args.cpu_class, device)
    print()
    print(format_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
        write_text_atomic(args.json, json.dumps({"rows": rows, "threads": args.threads, "torch": torch.__version__,
                                                 "device": str(device), "gpu": gpu,
                                                 "cpu": cpu_features().as_dict()}, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return 0


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
