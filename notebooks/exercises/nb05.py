"""Notebook 5's exercises: the reference's Eden learning rate, one AdamW update, and the unigram baseline of the
held-out loss.

Each check compares the learner's attempt with what it must equal: the library's ``learning_rate``, PyTorch's own
``torch.optim.AdamW``, and a cross-entropy computed here from the same codes. All run in milliseconds.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from vallex.training.trainer import TrainConfig, learning_rate

# Eden ------------------------------------------------------------------------------------------------------

#: (base lr, lr_batches, lr_epochs, warm-up steps) the check tries: the reference's own first, then others.
EDEN_SETTINGS = ((0.05, 5000, 4.0, 200), (0.01, 1000, 2.0, 50), (0.1, 300, 6.0, 0))
EDEN_POINTS = ((0, 0), (1, 0), (99, 0), (199, 0), (200, 0), (1000, 1), (5000, 0), (5000, 4), (20000, 10),
               (123456, 37))


def stub_eden_lr(step: int, epoch: int, base: float = 0.05, lr_batches: int = 5000, lr_epochs: float = 4.0,
                 warmup: int = 200) -> float:
    """The stub as notebook 5 ships it: a constant learning rate."""
    return base


def answer_eden_lr(step: int, epoch: int, base: float = 0.05, lr_batches: int = 5000, lr_epochs: float = 4.0,
                   warmup: int = 200) -> float:
    """Eden (lifeiteng/vall-e's schedule): inverse fourth root decay in steps and in epochs, warm-up from half."""
    step_factor = ((step**2 + lr_batches**2) / lr_batches**2) ** -0.25
    epoch_factor = ((epoch**2 + lr_epochs**2) / lr_epochs**2) ** -0.25
    warm = 1.0 if step >= warmup else 0.5 + 0.5 * step / warmup
    return base * step_factor * epoch_factor * warm


def check_eden_lr(attempt: Callable[..., float]) -> str | None:
    """``attempt(step, epoch, base=, lr_batches=, lr_epochs=, warmup=)`` against ``vallex.training``'s Eden."""
    for base, lr_batches, lr_epochs, warmup in EDEN_SETTINGS:
        config = TrainConfig(schedule="eden", lr=base, eden_lr_batches=lr_batches, eden_lr_epochs=lr_epochs,
                             warmup_steps=warmup)
        for step, epoch in EDEN_POINTS:
            want = learning_rate(config, step, epoch)
            got = float(attempt(step, epoch, base=base, lr_batches=lr_batches, lr_epochs=lr_epochs, warmup=warmup))
            if not math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-15):
                return (f"with base={base}, lr_batches={lr_batches}, lr_epochs={lr_epochs}, warmup={warmup}: "
                        f"step {step}, epoch {epoch} gives {got:.6g}, the library {want:.6g}")
    return None


# AdamW -----------------------------------------------------------------------------------------------------

def stub_adamw_update(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                      step: int, lr: float, betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                      weight_decay: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The stub as notebook 5 ships it: plain gradient descent, the moments left as they were."""
    return param - lr * grad, exp_avg, exp_avg_sq


def answer_adamw_update(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                        step: int, lr: float, betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                        weight_decay: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One AdamW update (``step`` counts from 1): decoupled weight decay, then Adam's bias-corrected step."""
    beta1, beta2 = betas
    exp_avg = beta1 * exp_avg + (1 - beta1) * grad
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    m_hat = exp_avg / (1 - beta1**step)
    v_hat = exp_avg_sq / (1 - beta2**step)
    param = param * (1 - lr * weight_decay) - lr * m_hat / (v_hat.sqrt() + eps)
    return param, exp_avg, exp_avg_sq


def check_adamw_update(attempt: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> str | None:
    """Four updates of a random tensor by ``attempt`` against ``torch.optim.AdamW`` fed the same gradients."""
    generator = torch.Generator().manual_seed(5)
    start = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    grads = [torch.randn(6, 5, generator=generator, dtype=torch.float64) * scale for scale in (1.0, 0.1, 3.0, 1e-3)]
    lrs = (1e-3, 5e-3, 2e-3, 1e-2)
    betas, eps, weight_decay = (0.9, 0.95), 1e-8, 0.1
    reference = torch.nn.Parameter(start.clone())
    optimizer = torch.optim.AdamW([reference], lr=lrs[0], betas=betas, eps=eps, weight_decay=weight_decay)
    param, exp_avg, exp_avg_sq = start.clone(), torch.zeros_like(start), torch.zeros_like(start)
    for step, (grad, lr) in enumerate(zip(grads, lrs), start=1):
        optimizer.param_groups[0]["lr"] = lr
        reference.grad = grad.clone()
        optimizer.step()
        param, exp_avg, exp_avg_sq = attempt(param.clone(), grad.clone(), exp_avg.clone(), exp_avg_sq.clone(), step,
                                             lr, betas=betas, eps=eps, weight_decay=weight_decay)
        state = optimizer.state[reference]
        for name, got, want in (("the parameter", param, reference.detach()), ("exp_avg", exp_avg, state["exp_avg"]),
                                ("exp_avg_sq", exp_avg_sq, state["exp_avg_sq"])):
            got = torch.as_tensor(got, dtype=torch.float64)
            if got.shape != want.shape:
                return f"after update {step}, {name} has shape {tuple(got.shape)}, not {tuple(want.shape)}"
            gap = (got - want).abs().max().item()
            if not gap <= 1e-10 + 1e-7 * want.abs().max().item():
                return f"after update {step}, {name} differs from torch.optim.AdamW's by up to {gap:.3g}"
    return None


# The unigram baseline --------------------------------------------------------------------------------------

def stub_unigram_loss(train_q0: Sequence[np.ndarray], held_q0: Sequence[np.ndarray]) -> float:
    """The stub as notebook 5 ships it: the uniform guess over 1024 codes, whatever the training codes say."""
    return math.log(1024)


def answer_unigram_loss(train_q0: Sequence[np.ndarray], held_q0: Sequence[np.ndarray]) -> float:
    """Mean -ln p(code) over the held-out frames, p = (count + 1) / (N + 1024) from the training frames."""
    counts = np.zeros(1024)
    for codes in train_q0:
        counts += np.bincount(np.asarray(codes), minlength=1024)
    p = (counts + 1) / (counts.sum() + 1024)
    held = np.concatenate([np.asarray(codes) for codes in held_q0])
    return float(-np.log(p[held]).mean())


def check_unigram_loss(attempt: Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], float]) -> str | None:
    """``attempt`` on random code sequences (skewed like speech: a few codes frequent) against the add-one
    unigram cross-entropy computed here."""
    rng = np.random.default_rng(5)
    weights = rng.pareto(1.0, 1024) + 1e-3
    weights /= weights.sum()
    train = [rng.choice(1024, size=n, p=weights) for n in (120, 75, 300)]
    held = [rng.choice(1024, size=n, p=weights) for n in (90, 60)]
    want = answer_unigram_loss(train, held)
    got = float(attempt([codes.copy() for codes in train], [codes.copy() for codes in held]))
    if not math.isclose(got, want, rel_tol=1e-6):
        return (f"on a test corpus it gives {got:.4f} nats per frame, the add-one unigram cross-entropy is "
                f"{want:.4f}")
    return None
