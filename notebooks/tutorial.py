"""What the tutorial notebooks share: how figures are shown and drawn, and the tiny model 05 and 06 train.

This is not the library (``vallex/``): it holds no step of VALL-E X, only what several notebooks would
otherwise each copy. The notebooks run with ``notebooks/`` as their working directory, so ``import tutorial``
finds this file.

* :func:`show` embeds a figure as a small PNG (what GitHub shows of the stored notebooks);
* :func:`draw_codes` draws EnCodec code ids with categorical colours (an id is a name, not a quantity);
* :func:`token_states` / :func:`draw_token_grid` draw what the AR and NAR know, predict and do not know yet;
* :func:`train_tiny_model` trains (once) the 2-layer model of notebook 5 on real speech codes, the reference's
  voice presets in ``data/presets`` (:data:`TRAIN_PRESETS`; :data:`HELD_OUT_PRESETS` are never trained on);
* :func:`real_codec` / :func:`hear`: the published Vocos where a learner's machine has it (never downloaded
  here), to play what a stage produced; without it, one line on how to get it.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # render off-screen; figures are embedded as PNG
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch
from PIL import Image as PILImage

from vallex.audio.codec_format import CODEBOOK_SIZE, NUM_CODEBOOKS
from vallex.prompts import PresetLibrary
from vallex.training.prepare import prepare_prompts
from vallex.training.trainer import TrainConfig, TrainResult, train

#: The reference's voice presets copied here (real speech as EnCodec codes; data/presets/README.md).
PRESETS_DIR = Path(__file__).resolve().parent / "data" / "presets"
#: What notebook 5 trains on: 8 English, 3 Mandarin and 1 Japanese utterance of 2.2-4.4 s.
TRAIN_PRESETS = ("acou_1", "acou_2", "amused", "babara", "cafe", "librispeech_1", "librispeech_2", "neutral",
                 "paimon", "seel", "vctk_1", "vctk_3")
#: Two English utterances the model never trains on: its validation set, and the "new sentences" of 5 and 6.
HELD_OUT_PRESETS = ("librispeech_3", "vctk_2")
#: Where the trained model is kept ($VALLEX_TUTORIAL_DIR, else a folder in the temporary directory).
TUTORIAL_DIR_ENV = "VALLEX_TUTORIAL_DIR"

#: Legible figures that keep the stored notebooks small (256-colour PNGs).
FIGURE_DPI = 110
#: What the real model sounds like: the paper's own samples.
DEMO_PAGE = "https://vallex-demo.github.io/"


def show(fig: plt.Figure) -> None:
    """Embed ``fig`` in the notebook output as a PNG (256 colours, which figures never need more of) and free it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    plt.close(fig)
    image = PILImage.open(buffer).convert("RGB").quantize(256, method=PILImage.Quantize.MEDIANCUT,
                                                           dither=PILImage.Dither.NONE)
    small = io.BytesIO()
    image.save(small, format="png", optimize=True)
    display(Image(small.getvalue()))


# Code ids -------------------------------------------------------------------------------------------------

#: One arbitrary colour per code id (+ EOS in black): neighbouring ids are no more alike than any two, so a
#: continuous colour map would suggest an order that does not exist.
CODE_COLORS = ListedColormap(np.vstack([np.random.default_rng(7).uniform(0.1, 0.95, (CODEBOOK_SIZE, 3)),
                                        [[0.0, 0.0, 0.0]]]))


def draw_codes(ax: plt.Axes, codes: np.ndarray, *, seconds: bool = False) -> None:
    """Code ids ``[rows, T]`` (or ``[T]``) as coloured cells, one colour per id (EOS, 1024, black); cells
    holding -1 are left blank (rows of different lengths).

    ``seconds``: label the x axis in seconds at 75 frames per second instead of frames.
    """
    codes = np.ma.masked_less(np.atleast_2d(np.asarray(codes)), 0)
    width = codes.shape[1] / 75 if seconds else codes.shape[1]
    ax.imshow(codes, aspect="auto", cmap=CODE_COLORS, vmin=0, vmax=CODEBOOK_SIZE, interpolation="nearest",
              extent=(0, width, codes.shape[0] - 0.5, -0.5))
    ax.set_xlabel("time (s)" if seconds else "frame (75 per second)")


# What each decoder knows ----------------------------------------------------------------------------------

UNKNOWN, PROMPT, KNOWN, PREDICTED = 0, 1, 2, 3
STATE_COLORS = ListedColormap(["#f2f2f2", "#7aa6c2", "#8cc084", "#f39c4a"])
STATE_LABELS = ("not known yet", "prompt (given)", "known: made earlier", "predicted in this step")


def token_states(prompt_frames: int, target_frames: int, *, ar_step: int | None = None,
                 nar_stage: int | None = None, teacher_forcing: bool = False) -> np.ndarray:
    """What is known of each code when a decoder runs: int array [8 codebooks, prompt + target frames].

    Exactly one of: ``ar_step=t`` (the AR predicts codebook 0 of target frame t; ``t = target_frames``: the AR
    has finished), ``nar_stage=s`` (1..7: the NAR predicts codebook s of every target frame at once). With
    ``teacher_forcing`` (training) the AR predicts codebook 0 of every frame at once, each from the true frames
    before it, and the NAR's prompt is the first ``prompt_frames`` frames of the same utterance.
    """
    if (ar_step is None) == (nar_stage is None):
        raise ValueError("Give exactly one of ar_step and nar_stage.")
    states = np.full((NUM_CODEBOOKS, prompt_frames + target_frames), UNKNOWN)
    states[:, :prompt_frames] = PROMPT
    target = slice(prompt_frames, None)
    if ar_step is not None:
        if teacher_forcing:
            states[0, target] = PREDICTED
        else:
            states[0, prompt_frames:prompt_frames + ar_step] = KNOWN
            if ar_step < target_frames:
                states[0, prompt_frames + ar_step] = PREDICTED
    else:
        if not 1 <= nar_stage < NUM_CODEBOOKS:
            raise ValueError(f"nar_stage must be in 1..{NUM_CODEBOOKS - 1}, got {nar_stage}.")
        states[:nar_stage, target] = KNOWN
        states[nar_stage, target] = PREDICTED
    return states


def draw_token_grid(ax: plt.Axes, states: np.ndarray, prompt_frames: int, title: str) -> None:
    """Draw :func:`token_states`: codebooks top to bottom, frames left to right, a line after the prompt."""
    rows, frames = states.shape
    ax.imshow(states, cmap=STATE_COLORS, vmin=0, vmax=3, aspect="auto", interpolation="nearest")
    ax.set_xticks(np.arange(-0.5, frames), minor=True)
    ax.set_yticks(np.arange(-0.5, rows), minor=True)
    ax.grid(which="minor", color="white", lw=1)
    ax.tick_params(which="minor", length=0)
    ax.set_yticks(range(rows), [f"q{j}" for j in range(rows)], fontsize=8)
    ax.set_xticks([])
    if prompt_frames:
        ax.axvline(prompt_frames - 0.5, color="black", lw=2)
    ax.set_title(title, fontsize=9)


def token_grid_legend(fig: plt.Figure) -> None:
    """The colours of :func:`draw_token_grid`, once per figure."""
    handles = [Patch(color=STATE_COLORS(i), label=label) for i, label in enumerate(STATE_LABELS)]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=9, frameon=False, bbox_to_anchor=(0.5, -0.06))


# The tiny model of notebooks 5 and 6 ----------------------------------------------------------------------

def presets() -> PresetLibrary:
    """The real-speech presets in ``data/presets``, read by the library's own preset reader."""
    return PresetLibrary(PRESETS_DIR)


def tiny_model_recipe(data: Path, valid_data: Path, out_dir: Path) -> TrainConfig:
    """The training run of notebook 5: chosen to memorise 12 utterances in ~30 s on one CPU thread."""
    return TrainConfig(
        data=str(data), valid_data=str(valid_data), out_dir=str(out_dir),
        model="tiny",  # 2 layers of width 64: 1.2 M parameters
        stage="both",  # AR and NAR in every step, loss = (AR + NAR) / 2
        max_steps=450, batch_size=4,
        lr=5e-3, warmup_steps=20, schedule="cosine",  # a high rate: memorising quickly is the goal here
        dropout=0.0,  # no regularisation either: nothing here is meant to generalise
        log_every=1, valid_every=75,  # every step in log.csv; the held-out loss 6 times
        save_every=150,  # checkpoints at steps 150, 300 and 450: notebook 6 decodes a half-trained model too
        seed=0, num_threads=1,
    )


def tutorial_dir() -> Path:
    """``$VALLEX_TUTORIAL_DIR``, else a folder named after the recipe and data in the temporary directory."""
    if os.environ.get(TUTORIAL_DIR_ENV):
        return Path(os.environ[TUTORIAL_DIR_ENV])
    digest = hashlib.sha256(tiny_model_recipe(Path("data"), Path("valid"), Path("run")).to_yaml().encode())
    for name in TRAIN_PRESETS + HELD_OUT_PRESETS:
        digest.update((PRESETS_DIR / f"{name}.npz").read_bytes())
    return Path(tempfile.gettempdir()) / f"vallex-tutorial-{digest.hexdigest()[:12]}"


def train_tiny_model(on_step: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train notebook 5's model in :func:`tutorial_dir` (``run/``), or return at once where it already was.

    The trainer resumes a run from its folder, so a finished run is not trained again: notebooks 5 and 6 share
    one model whichever runs first. Its logs (``run/log.csv``, ``run/valid.csv``) hold every step either way.
    """
    root = tutorial_dir()
    library = presets()
    data, valid = root / "train", root / "valid"
    prepare_prompts((library.load(name) for name in TRAIN_PRESETS), data)
    prepare_prompts((library.load(name) for name in HELD_OUT_PRESETS), valid)
    return train(tiny_model_recipe(data, valid, root / "run"), on_step=on_step)


def real_codec():
    """The published EnCodec + Vocos when this machine has them (``vallex download``; never fetched here), else None.

    Random-weights folders (``vallex make-random-weights``) do not count: their Vocos makes noise.
    """
    from vallex.weights import WeightsNotFoundError, resolve_weights

    try:
        paths = resolve_weights(download=False, components=("encodec", "vocos"))
    except (WeightsNotFoundError, ValueError, OSError):
        return None
    if paths.random:
        return None
    from vallex.audio.codec import AudioCodec

    return AudioCodec.from_paths(paths, "cpu")


def hear(codes, codec=None, label: str = "") -> None:
    """Play EnCodec ``codes`` (LongTensor [1, T, 8] or [T, 8]) through the real Vocos when it is here; otherwise
    say in one line how to get it, and where the paper's own samples are."""
    codec = codec if codec is not None else real_codec()
    if codec is None:
        print(f"(No published Vocos on this machine, so nothing to play{f' for {label}' if label else ''}: "
              f"`vallex download --only encodec vocos` fetches it. The paper's samples: {DEMO_PAGE})")
        return
    import torch
    from IPython.display import Audio

    codes = torch.as_tensor(codes).reshape(1, -1, NUM_CODEBOOKS).long()
    waveform = codec.decode_codes(codes).reshape(-1)
    if label:
        print(label)
    display(Audio(np.asarray(waveform, dtype=np.float32), rate=24000))
