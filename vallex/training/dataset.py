"""Reading a prepared training set: memory-mapped shards, padding collation, duration-bucketed batches.

The sampler builds *global* batches that do not depend on the number of processes; with DDP each rank
takes a slice of every global batch, so 2 GPUs with batch B each see exactly the batches 1 GPU sees with
batch 2B (``tests/test_training_ddp.py`` checks the losses agree).
"""
from __future__ import annotations

import random
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vallex.training.forward import TrainingBatch
from vallex.training.prepare import INDEX_NAME, load_index


@dataclass(frozen=True)
class Utterance:
    """One prepared utterance: text ids [S], per-token language ids [S], codes [T, Q] (int64 arrays)."""

    id: str
    text: np.ndarray
    langs: np.ndarray
    codes: np.ndarray


class CodesDataset:
    """A prepared folder (``index.json`` + ``shard-*.npy``); shards are memory-mapped on first use.

    ``ids``: restrict to these item ids (e.g. a train/validation split), in index order.
    """

    def __init__(self, root: str | Path, ids: Sequence[str] | None = None) -> None:
        self.root = Path(root)
        if not (self.root / INDEX_NAME).is_file():
            raise FileNotFoundError(f"No prepared data in {self.root} (missing {INDEX_NAME}); "
                                    "run `vallex prepare-data` first.")
        index = load_index(self.root)
        items = index["items"]
        if ids is not None:
            wanted = set(ids)
            items = [item for item in items if item["id"] in wanted]
        self.items = items
        self.languages: list[str] = list(index["languages"])
        self.num_quantizers = index["num_quantizers"]
        self._shards: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.items)

    @property
    def frames(self) -> list[int]:
        """Codes frames (75 Hz) of every utterance, for bucketing."""
        return [int(item["frames"]) for item in self.items]

    @property
    def max_text_id(self) -> int:
        if not self.items:
            return 0
        return max(int(self._shard(shard)[1].max()) for shard in {item["shard"] for item in self.items})

    def _shard(self, shard: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if shard not in self._shards:
            def load(suffix: str) -> np.ndarray:
                return np.load(self.root / f"{shard}.{suffix}.npy", mmap_mode="r", allow_pickle=False)

            self._shards[shard] = (load("codes"), load("text"), load("langs"))
        return self._shards[shard]

    def __getitem__(self, i: int) -> Utterance:
        item = self.items[i]
        codes, text, langs = self._shard(item["shard"])
        c0, t0 = item["code_offset"], item["text_offset"]
        return Utterance(
            id=item["id"],
            text=np.asarray(text[t0:t0 + item["tokens"]], dtype=np.int64),
            langs=np.asarray(langs[t0:t0 + item["tokens"]], dtype=np.int64),
            codes=np.asarray(codes[c0:c0 + item["frames"]], dtype=np.int64),
        )


def split_ids(ids: Sequence[str], valid_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic train/validation split by a hash of each id (stable when data is added)."""
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}.")
    valid = [i for i in ids if zlib.crc32(i.encode("utf-8")) % 10_000 < valid_fraction * 10_000]
    chosen = set(valid)
    return [i for i in ids if i not in chosen], valid


def collate(utterances: Sequence[Utterance]) -> TrainingBatch:
    """Pad a list of utterances into a :class:`TrainingBatch` (text with 0, codes with 0)."""
    if not utterances:
        raise ValueError("Cannot collate an empty batch.")
    size = len(utterances)
    text_len = max(len(u.text) for u in utterances)
    frames = max(len(u.codes) for u in utterances)
    num_q = utterances[0].codes.shape[1]
    text = torch.zeros(size, text_len, dtype=torch.long)
    langs = torch.zeros(size, text_len, dtype=torch.long)
    codes = torch.zeros(size, frames, num_q, dtype=torch.long)
    for b, u in enumerate(utterances):
        text[b, :len(u.text)] = torch.from_numpy(u.text)
        langs[b, :len(u.langs)] = torch.from_numpy(u.langs)
        codes[b, :len(u.codes)] = torch.from_numpy(u.codes)
    return TrainingBatch(
        text=text, text_lens=torch.tensor([len(u.text) for u in utterances]),
        text_langs=langs, codes=codes, code_lens=torch.tensor([len(u.codes) for u in utterances]),
    )


class BucketBatchSampler:
    """Global batches of utterances of similar duration.

    Utterances are sorted by length and cut into ``num_buckets`` buckets of equal count; each epoch every
    bucket is shuffled and cut into batches of at most ``batch_size`` utterances and at most
    ``max_frames`` padded frames (``batch * longest``; 0 = no limit); then the batch order is shuffled.
    Everything is seeded by ``seed + epoch``, so every process builds the same batches.
    """

    def __init__(self, frames: Sequence[int], batch_size: int, *, max_frames: int = 0, num_buckets: int = 6,
                 seed: int = 0, shuffle: bool = True, min_batch: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.frames = list(frames)
        self.batch_size, self.max_frames = batch_size, max_frames
        self.num_buckets = max(1, min(num_buckets, len(self.frames)))
        self.seed, self.shuffle, self.min_batch = seed, shuffle, min_batch

    def batches(self, epoch: int) -> list[list[int]]:
        order = sorted(range(len(self.frames)), key=lambda i: (self.frames[i], i))
        rng = random.Random(self.seed + epoch)
        bounds = np.linspace(0, len(order), self.num_buckets + 1).astype(int)
        batches: list[list[int]] = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            bucket = order[lo:hi]
            if self.shuffle:
                rng.shuffle(bucket)
            current: list[int] = []
            longest = 0
            for i in bucket:
                new_longest = max(longest, self.frames[i])
                too_many = len(current) >= self.batch_size
                too_long = self.max_frames > 0 and current and new_longest * (len(current) + 1) > self.max_frames
                if too_many or too_long:
                    batches.append(current)
                    current, new_longest = [], self.frames[i]
                current.append(i)
                longest = new_longest
            if current:
                batches.append(current)
        # Batches smaller than min_batch (e.g. fewer utterances than DDP ranks) cannot be shared out.
        batches = [b for b in batches if len(b) >= self.min_batch]
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches(0))


def shard_batch(batch: Sequence[int], rank: int, world_size: int) -> list[int]:
    """This rank's part of a global batch (every world_size-th utterance)."""
    return list(batch[rank::world_size])
