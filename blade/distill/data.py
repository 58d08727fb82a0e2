"""Prompt-embedding batches for distillation: every rank its own prompts, each prompt once per epoch.

The order comes from `torch.utils.data.DistributedSampler` (shuffled per epoch with the run's seed,
`drop_last=True`): ranks get disjoint index sets, and the few prompts that do not fill a last batch on
every rank sit the epoch out (a fresh shuffle picks others next epoch) rather than being repeated.
Batch n of the run is a pure function of (seed, rank, world size, n), so a resumed run continues
with exactly the batches the uninterrupted run would have seen.

The dataset is anything indexable whose items are dicts with "index" (int) and "prompt_embeds"
`[L, D]`, with a `negative_embeds` `[L, D]` attribute: `blade.prompts.load_embeddings` returns one.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler


def collate_prompts(items: list[dict]) -> dict:
    """Stack dataset items into {"index": [B] int64, "prompt_embeds": [B, L, D]}."""
    return {
        "index": torch.tensor([int(item["index"]) for item in items], dtype=torch.int64),
        "prompt_embeds": torch.stack([item["prompt_embeds"] for item in items]),  # [B, L, D]
    }


class PromptBatches:
    """Endless per-rank stream of prompt-embedding batches, epoch after epoch.

    Args:
        dataset: see the module docstring.
        batch_size: prompts per batch on this rank.
        num_replicas: world size.
        rank: this process's rank.
        seed: shuffling seed (the same on every rank).
        num_workers: DataLoader worker processes.
    """

    def __init__(self, dataset, batch_size: int, *, num_replicas: int = 1, rank: int = 0, seed: int = 0, num_workers: int = 0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must lie in [0, num_replicas={num_replicas}), got {rank}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.sampler = DistributedSampler(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.batches_per_epoch = len(self.sampler) // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{len(dataset)} prompts cannot fill one batch of {batch_size} on each of {num_replicas} "
                f"processes (needs at least {batch_size * num_replicas}); embed more prompts or lower batch_size"
            )

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """Return this rank's batches of dataset indices in epoch `epoch`."""
        self.sampler.set_epoch(epoch)
        indices = list(self.sampler)
        size = self.batch_size
        return [indices[start : start + size] for start in range(0, self.batches_per_epoch * size, size)]

    def iterate(self, start: int = 0) -> Iterator[dict]:
        """Yield collated batches forever, beginning with batch number `start` of the run."""
        epoch, offset = divmod(start, self.batches_per_epoch)
        while True:
            loader = DataLoader(
                self.dataset,
                batch_sampler=self.epoch_batches(epoch)[offset:],
                collate_fn=collate_prompts,
                num_workers=self.num_workers,
            )
            yield from loader
            epoch, offset = epoch + 1, 0
