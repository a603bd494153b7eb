"""``vallex prepare-data``: recordings + transcripts -> a sharded, memory-mappable training set.

Inputs (each utterance: audio, transcript, language, optional speaker):

* a **folder**: ``clip.wav`` beside ``clip.txt``. The language is the first sub-folder's name when it is a
  language code (``data/en/...``, ``data/de/...``), else ``--language``; a transcript written as
  ``de|Guten Tag.`` names its own language (one language per line of text).
* a **recording list**, CSV (header ``path,text,language[,speaker][,id]``) or JSONL (one object per line with
  the same keys); relative paths are relative to the list's folder.
* **voice prompts** whose codes exist already (:func:`prepare_prompts`), such as the reference's ``.npz``
  presets: no audio is read and no codec runs.

Every utterance is loaded as mono 24 kHz (:func:`vallex.audio.load_audio`), kept if it lasts 0.5-20 s,
tokenised with EnCodec (8 codebooks at 75 Hz) and its text turned into phoneme ids by
:func:`vallex.text.tokenize_language`: the checkpoint's front end for en/zh/ja, the espeak-ng front end
(:class:`vallex.text.EspeakFrontend`) for any other language (a model trained on it reads its text with the
same function). Bad items (missing transcript, unreadable
audio, empty text, clip too short/long) are reported and skipped; a summary counts them.

Output folder::

    index.json            items, languages, shards (written atomically after every shard)
    shard-00000.codes.npy int16 [frames, 8]   all codes of the shard's utterances, concatenated
    shard-00000.text.npy  int16 [tokens]      phoneme ids, concatenated
    shard-00000.langs.npy int8  [tokens]      per-token language (index into index.json "languages")

An item records its shard and offsets, so a reader memory-maps the shard and slices it (no unpickling).
Re-running skips the items already in the index (resumable after an interruption, idempotent).
"""
from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from vallex.audio.codec_format import FRAME_RATE, SAMPLE_RATE
from vallex.audio.files import PYAV_EXTENSIONS, SOUNDFILE_EXTENSIONS
from vallex.files import atomic_open, make_folder, write_text_atomic
from vallex.languages import LANGUAGE_CODE_PATTERN, LANGUAGES
from vallex.progress import progress_bar

if TYPE_CHECKING:
    import torch

    from vallex.prompts import VoicePrompt

_LOG = logging.getLogger(__name__)

INDEX_NAME = "index.json"
FORMAT_VERSION = 1
MIN_SECONDS = 0.5
MAX_SECONDS = 20.0
#: Utterances per shard: a shard is the unit of progress that survives an interruption.
DEFAULT_SHARD_SIZE = 256
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS + PYAV_EXTENSIONS
_LANGUAGE_RE = LANGUAGE_CODE_PATTERN
_SHARD_RE = re.compile(r"^shard-\d{5}$")


class Encoder(Protocol):
    """What prepare needs from :class:`vallex.audio.codec.AudioCodec`."""

    def encode_audio(self, wav: np.ndarray) -> torch.Tensor:
        """wav float32 [N] at 24 kHz -> LongTensor [1, T, Q] codes at 75 Hz."""


@dataclass(frozen=True)
class SourceItem:
    """One utterance to prepare. ``text`` is None when the transcript is missing (reported, skipped)."""

    id: str
    audio: Path
    text: str | None
    language: str | None
    speaker: str = ""


@dataclass
class PrepareReport:
    """What a run did. ``skipped`` maps a reason to the items (id, detail) it rejected."""

    added: int = 0
    already_done: int = 0
    skipped: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    @property
    def skipped_count(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def reject(self, reason: str, item_id: str, detail: str) -> None:
        self.skipped.setdefault(reason, []).append((item_id, detail))
        _LOG.warning("skipped %s (%s): %s", item_id, reason, detail)

    def skip_counts(self) -> str:
        """How many items each reason skipped, on one line: ``"too short: 2, bad text: 1"``."""
        return ", ".join(f"{reason}: {len(items)}" for reason, items in sorted(self.skipped.items()))

    def summary(self) -> str:
        parts = [f"{self.added} added", f"{self.already_done} already prepared", f"{self.skipped_count} skipped"]
        text = ", ".join(parts)
        for reason, items in sorted(self.skipped.items()):
            text += f"\n  {reason}: {len(items)}"
            for item_id, detail in items[:5]:
                text += f"\n    {item_id}: {detail}"
            if len(items) > 5:
                text += f"\n    ... and {len(items) - 5} more"
        return text


# Sources --------------------------------------------------------------------------------------------------

def _check_language(language: str, where: str) -> str:
    language = language.strip().lower()
    if not _LANGUAGE_RE.match(language):
        raise ValueError(f"{where}: {language!r} is not a language code (expected e.g. 'en', 'zh', 'de', 'fr-fr').")
    return language


def _split_language_prefix(text: str) -> tuple[str | None, str]:
    """``"de|Guten Tag"`` -> ("de", "Guten Tag"); text without a ``code|`` prefix -> (None, text)."""
    head, sep, rest = text.partition("|")
    if sep and _LANGUAGE_RE.match(head.strip().lower()):
        return head.strip().lower(), rest.strip()
    return None, text.strip()


def _is_language_folder(name: str) -> bool:
    """A folder named en/zh/ja or an espeak-ng language code (so "wav/" or "raw/" are not languages)."""
    if name in LANGUAGES:
        return True
    if not _LANGUAGE_RE.match(name):
        return False
    from vallex.text.espeak import supported_languages

    return name in supported_languages()


def scan_folder(root: str | Path, language: str | None = None) -> list[SourceItem]:
    """Audio files under ``root`` (recursively, sorted) with their same-name ``.txt`` transcripts.

    Language per item: a ``code|`` prefix in the transcript, else a first sub-folder named like a language
    code, else ``language``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Data folder not found: {root}")
    default = _check_language(language, "--language") if language else None
    items = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()):
        relative = path.relative_to(root)
        item_id = relative.with_suffix("").as_posix()
        folder_language = None
        if len(relative.parts) > 1 and _is_language_folder(relative.parts[0].lower()):
            folder_language = relative.parts[0].lower()
        transcript = path.with_suffix(".txt")
        text = lang = None
        if transcript.is_file():
            try:
                raw = transcript.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raw = None
                _LOG.warning("cannot read %s: %s", transcript, error)
            if raw is not None:
                lang, text = _split_language_prefix(" ".join(raw.split()))
        items.append(SourceItem(item_id, path, text, lang or folder_language or default, ""))
    return items


def read_recording_list(path: str | Path) -> list[SourceItem]:
    """Items of a CSV (with a header) or JSONL recording list: path, text, language, optional speaker and id."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Recording list not found: {path}")
    rows: list[dict] = []
    if path.suffix.lower() in (".jsonl", ".json"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number} is not valid JSON ({error}); "
                                 "expected one object per line.") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number} must be a JSON object with path, text and language.")
            rows.append(row)
    elif path.suffix.lower() in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    else:
        raise ValueError(f"Unsupported recording list {path.name}: use .csv (header path,text,language[,speaker]) "
                         "or .jsonl.")
    items = []
    for number, row in enumerate(rows, 1):
        if not row.get("path"):
            raise ValueError(f"{path}: row {number} has no 'path'; every row needs path, text and language.")
        audio = Path(str(row["path"]))
        audio = audio if audio.is_absolute() else path.parent / audio
        text = row.get("text")
        text = " ".join(str(text).split()) if text is not None else None
        language = row.get("language") or None
        item_id = str(row.get("id") or Path(str(row["path"])).with_suffix("").as_posix())
        items.append(SourceItem(item_id, audio, text, language, str(row.get("speaker") or "")))
    return items


# Text -----------------------------------------------------------------------------------------------------

class TextEncoder:
    """Text -> (phoneme ids, per-token language codes) by :func:`vallex.text.tokenize_language`: the checkpoint's
    front end for en/zh/ja, espeak-ng for other languages."""

    def __call__(self, text: str, language: str) -> tuple[list[int], list[str]]:
        from vallex.text import tokenize_language

        tokens = tokenize_language(text, language)
        if not tokens.ids:
            raise ValueError(f"{text!r} gives no phonemes.")
        return list(tokens.ids), list(tokens.langs)


# Writing --------------------------------------------------------------------------------------------------

def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def load_index(out_dir: str | Path) -> dict:
    """The dataset index (a fresh empty one if ``out_dir`` has none yet)."""
    path = Path(out_dir) / INDEX_NAME
    if not path.is_file():
        return {"version": FORMAT_VERSION, "sample_rate": SAMPLE_RATE, "frame_rate": FRAME_RATE,
                "num_quantizers": None, "languages": list(LANGUAGES), "shards": [], "items": []}
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete the folder and prepare again.") from None
    if index.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format version {index.get('version')}; this vallex reads {FORMAT_VERSION}.")
    for shard in index["shards"]:
        if not _SHARD_RE.match(shard):
            raise ValueError(f"{path} names an invalid shard {shard!r}.")
    return index


class _ShardWriter:
    """Buffers prepared utterances and writes them as one shard + updated index."""

    def __init__(self, out_dir: Path, index: dict) -> None:
        self.out_dir, self.index = out_dir, index
        self._reset()

    def _reset(self) -> None:
        self.codes: list[np.ndarray] = []
        self.text: list[np.ndarray] = []
        self.langs: list[np.ndarray] = []
        self.items: list[dict] = []
        self.frames = self.tokens = 0

    def add(self, item: SourceItem, codes: np.ndarray, ids: list[int], langs: list[int], seconds: float) -> None:
        shard = f"shard-{len(self.index['shards']):05d}"
        self.items.append({
            "id": item.id, "shard": shard, "code_offset": self.frames, "frames": int(codes.shape[0]),
            "text_offset": self.tokens, "tokens": len(ids), "language": item.language,
            "speaker": item.speaker, "seconds": round(seconds, 3), "text": item.text,
        })
        self.codes.append(codes.astype(np.int16))
        self.text.append(np.asarray(ids, dtype=np.int16))
        self.langs.append(np.asarray(langs, dtype=np.int8))
        self.frames += int(codes.shape[0])
        self.tokens += len(ids)

    def __len__(self) -> int:
        return len(self.items)

    def flush(self) -> None:
        if not self.items:
            return
        shard = self.items[0]["shard"]
        _save_npy(self.out_dir / f"{shard}.codes.npy", np.concatenate(self.codes))
        _save_npy(self.out_dir / f"{shard}.text.npy", np.concatenate(self.text))
        _save_npy(self.out_dir / f"{shard}.langs.npy", np.concatenate(self.langs))
        # The index is written last: a shard it does not list is simply rewritten by the next run.
        self.index["shards"].append(shard)
        self.index["items"].extend(self.items)
        write_text_atomic(self.out_dir / INDEX_NAME, json.dumps(self.index, ensure_ascii=False, indent=0))
        self._reset()


def prepare_dataset(
    items: Iterable[SourceItem],
    out_dir: str | Path,
    codec: Encoder,
    *,
    min_seconds: float = MIN_SECONDS,
    max_seconds: float = MAX_SECONDS,
    shard_size: int = DEFAULT_SHARD_SIZE,
    text_encoder: Callable[[str, str], tuple[list[int], list[str]]] | None = None,
    progress: bool = True,
) -> PrepareReport:
    """Prepare ``items`` into ``out_dir`` (created if needed); items already there are skipped.

    Args:
        codec: has ``encode_audio(wav float32 [N] at 24 kHz) -> LongTensor [1, T, 8]``
            (:class:`vallex.audio.codec.AudioCodec`; ``vallex.weights.random_weights.random_codec()`` for tests).
        min_seconds, max_seconds: duration filter (the reference trained on 0.5-20 s).
        shard_size: utterances per shard.
        text_encoder: ``(text, language) -> (ids, per-token languages)``; default :class:`TextEncoder`.
    Returns:
        A :class:`PrepareReport`; ``report.summary()`` is the human-readable version.
    """
    from vallex.audio.loading import load_audio

    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}.")
    if not 0 < min_seconds < max_seconds:
        raise ValueError(f"Need 0 < min_seconds < max_seconds, got {min_seconds} and {max_seconds}.")
    out_dir = Path(out_dir)
    make_folder(out_dir)
    index = load_index(out_dir)
    done = {item["id"] for item in index["items"]}
    encode_text = text_encoder or TextEncoder()
    report = PrepareReport()
    writer = _ShardWriter(out_dir, index)
    items = list(items)
    seen: set[str] = set()
    try:
        for item in _progress(items, progress):
            if item.id in seen:
                report.reject("duplicate id", item.id, f"{item.audio} repeats an id already in this input")
                continue
            seen.add(item.id)
            if item.id in done:
                report.already_done += 1
                continue
            entry = _prepare_one(item, codec, encode_text, load_audio, min_seconds, max_seconds, report)
            if entry is None:
                continue
            codes, ids, langs, seconds, language = entry
            _add(writer, SourceItem(item.id, item.audio, item.text, language, item.speaker), codes, ids, langs,
                 seconds)
            report.added += 1
            if len(writer) >= shard_size:
                writer.flush()
    finally:
        writer.flush()  # an interrupted run keeps everything finished so far
    _leave_index(out_dir, index)
    return report


def prepare_prompts(prompts: Iterable[VoicePrompt], out_dir: str | Path, *,
                    shard_size: int = DEFAULT_SHARD_SIZE) -> PrepareReport:
    """Prepare utterances whose codes and phoneme ids exist already: voice prompts, such as the reference's
    ``.npz`` presets (:class:`vallex.prompts.PresetLibrary`), become a training set without audio or a codec.

    Each prompt's name is its item id and every transcript token gets the prompt's language; items already
    in ``out_dir`` are skipped, as in :func:`prepare_dataset`.

    Raises:
        ValueError: a prompt without a name, or two prompts with the same name.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}.")
    out_dir = Path(out_dir)
    make_folder(out_dir)
    index = load_index(out_dir)
    done = {item["id"] for item in index["items"]}
    report = PrepareReport()
    writer = _ShardWriter(out_dir, index)
    seen: set[str] = set()
    try:
        for prompt in prompts:
            if prompt.name is None or prompt.name in seen:
                raise ValueError(f"Every prompt needs a name of its own (the item id), got {prompt.name!r}"
                                 f"{' twice' if prompt.name in seen else ''}.")
            seen.add(prompt.name)
            if prompt.name in done:
                report.already_done += 1
                continue
            item = SourceItem(prompt.name, Path(f"{prompt.name}.npz"), prompt.transcript or "", prompt.language)
            _add(writer, item, prompt.codes[0].numpy(), prompt.text_ids, [prompt.language] * len(prompt.text_ids),
                 prompt.seconds)
            report.added += 1
            if len(writer) >= shard_size:
                writer.flush()
    finally:
        writer.flush()
    _leave_index(out_dir, index)
    return report


def _add(writer: _ShardWriter, item: SourceItem, codes: np.ndarray, ids: list[int], langs: list[str],
         seconds: float) -> None:
    """Give ``item`` to ``writer``, its per-token languages as rows of the index's language table."""
    index = writer.index
    language_ids = []
    for code in langs:
        if code not in index["languages"]:
            index["languages"].append(code)  # a new language gets the next embedding row
        language_ids.append(index["languages"].index(code))
    num_q = int(codes.shape[1])
    if index["num_quantizers"] is None:
        index["num_quantizers"] = num_q
    elif index["num_quantizers"] != num_q:
        raise ValueError(f"{item.id} has {num_q} codebooks but {writer.out_dir} holds {index['num_quantizers']}.")
    writer.add(item, codes, ids, language_ids, seconds)


def _leave_index(out_dir: Path, index: dict) -> None:
    """Nothing written yet: still leave a valid (empty) index."""
    if not (out_dir / INDEX_NAME).is_file():
        write_text_atomic(out_dir / INDEX_NAME, json.dumps(index, ensure_ascii=False, indent=0))


def _prepare_one(
    item: SourceItem,
    codec: Encoder,
    encode_text: Callable[[str, str], tuple[list[int], list[str]]],
    load_audio: Callable[..., np.ndarray],
    min_seconds: float,
    max_seconds: float,
    report: PrepareReport,
) -> tuple[np.ndarray, list[int], list[str], float, str] | None:
    """(codes [T, Q], text ids, per-token languages, seconds, language) or None after reporting why not."""
    if item.text is None:
        report.reject("missing transcript", item.id, f"no {item.audio.with_suffix('.txt').name} beside the audio")
        return None
    if not item.text.strip():
        report.reject("empty text", item.id, "the transcript is empty")
        return None
    if not item.language:
        report.reject("no language", item.id, "put it in a language folder (en/, de/...), prefix the "
                      "transcript with 'de|' or pass --language")
        return None
    language = item.language.strip().lower()
    if not _LANGUAGE_RE.match(language):
        report.reject("bad language", item.id, f"{item.language!r} is not a language code")
        return None
    if not item.audio.is_file():
        report.reject("unreadable audio", item.id, f"{item.audio} does not exist")
        return None
    try:
        wav = load_audio(item.audio)
    except (ValueError, OSError, RuntimeError) as error:
        report.reject("unreadable audio", item.id, str(error).splitlines()[0][:200])
        return None
    seconds = len(wav) / SAMPLE_RATE
    if seconds < min_seconds:
        report.reject("too short", item.id, f"{seconds:.2f} s < {min_seconds} s")
        return None
    if seconds > max_seconds:
        report.reject("too long", item.id, f"{seconds:.2f} s > {max_seconds} s")
        return None
    try:
        ids, langs = encode_text(item.text, language)
    except (ValueError, RuntimeError) as error:
        report.reject("bad text", item.id, str(error).splitlines()[0][:200])
        return None
    codes = np.asarray(codec.encode_audio(wav))[0]  # [T, Q]
    return codes, ids, langs, seconds, language


def _progress(items: list, enabled: bool) -> Iterator:
    if not enabled:
        yield from items
        return
    yield from progress_bar(items, desc="prepare", unit="utt")
