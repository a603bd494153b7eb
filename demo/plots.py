"""Waveform + spectrogram pictures of the prompt and the output (numpy + Pillow, no plotting library)."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH = 900
WAVE_HEIGHT = 60
SPEC_HEIGHT = 120
LABEL_HEIGHT = 18
MAX_HZ = 8000.0  # speech lives below this; higher bins would be mostly empty rows

# Anchor colours of a viridis-like map (dark blue → green → yellow): readable and colour-blind safe.
_ANCHORS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float32)


def _colormap(values: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[..., 3]`` for ``values`` in [0, 1]."""
    position = np.clip(values, 0.0, 1.0) * (len(_ANCHORS) - 1)
    low = np.floor(position).astype(int).clip(0, len(_ANCHORS) - 2)
    frac = (position - low)[..., None]
    return (_ANCHORS[low] * (1 - frac) + _ANCHORS[low + 1] * frac).astype(np.uint8)


def spectrogram_db(wav: np.ndarray, sample_rate: int, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """Log-magnitude STFT in dB, float32 ``[freq bins up to 8 kHz, frames]`` (0 dB = the loudest bin)."""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if len(wav) < n_fft:
        wav = np.pad(wav, (0, n_fft - len(wav)))
    frames = 1 + (len(wav) - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spectrum = np.abs(np.fft.rfft(wav[index] * np.hanning(n_fft).astype(np.float32), axis=1)).T
    bins = int(MAX_HZ / (sample_rate / 2) * spectrum.shape[0]) if sample_rate > 2 * MAX_HZ else spectrum.shape[0]
    db = 20 * np.log10(np.maximum(spectrum[:bins], 1e-8))
    return (db - db.max()).astype(np.float32)


def _resize_columns(matrix: np.ndarray, width: int) -> np.ndarray:
    columns = np.linspace(0, matrix.shape[1] - 1, width).round().astype(int)
    return matrix[:, columns]


def _panel(wav: np.ndarray, sample_rate: int, label: str) -> Image.Image:
    """One labelled panel: the waveform envelope above the spectrogram (low frequencies at the bottom)."""
    panel = Image.new("RGB", (WIDTH, LABEL_HEIGHT + WAVE_HEIGHT + SPEC_HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    seconds = len(wav) / sample_rate
    # Right-aligned: Gradio lays its own component label over the top-left corner.
    text, font = f"{label} - {seconds:.2f} s", ImageFont.load_default(size=14)
    draw.text((WIDTH - 6 - draw.textlength(text, font=font), 1), text, fill=(20, 20, 20), font=font)
    # Waveform: min/max of the samples under each pixel column.
    chunks = np.array_split(np.asarray(wav, dtype=np.float32), WIDTH) if len(wav) >= WIDTH else [wav] * WIDTH
    middle = LABEL_HEIGHT + WAVE_HEIGHT / 2
    scale = (WAVE_HEIGHT / 2 - 2) / max(float(np.max(np.abs(wav))) if len(wav) else 1.0, 1e-6)
    for x, chunk in enumerate(chunks):
        if len(chunk):
            draw.line([(x, middle - float(chunk.max()) * scale), (x, middle - float(chunk.min()) * scale)],
                      fill=(40, 90, 170))
    # Spectrogram: 70 dB of dynamic range, resized to the panel.
    db = spectrogram_db(wav, sample_rate)
    rows = np.linspace(db.shape[0] - 1, 0, SPEC_HEIGHT).round().astype(int)
    image = _colormap((_resize_columns(db[rows], WIDTH) + 70.0) / 70.0)
    panel.paste(Image.fromarray(image, "RGB"), (0, LABEL_HEIGHT + WAVE_HEIGHT))
    return panel


def audio_picture(output: np.ndarray, sample_rate: int, prompt: np.ndarray | None = None) -> Image.Image:
    """A picture of the prompt (if given) and the output: float32 ``[N]`` samples at ``sample_rate`` Hz."""
    panels = ([_panel(prompt, sample_rate, "Voice prompt")] if prompt is not None and len(prompt) else [])
    panels.append(_panel(output, sample_rate, "Output"))
    picture = Image.new("RGB", (WIDTH, sum(p.height for p in panels)), (255, 255, 255))
    y = 0
    for panel in panels:
        picture.paste(panel, (0, y))
        y += panel.height
    return picture
