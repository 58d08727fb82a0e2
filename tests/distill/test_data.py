"""Per-rank prompt batches: disjoint across ranks, no prompt twice per epoch, exact resume."""

import itertools

import pytest

from blade.distill import PromptBatches
from blade.prompts import load_embeddings


def test_ranks_get_disjoint_batches_each_prompt_at_most_once(wan_embeddings):
    dataset = load_embeddings(wan_embeddings)  # 9 prompts
    streams = [PromptBatches(dataset, 2, num_replicas=2, rank=rank, seed=5) for rank in range(2)]
    assert [s.batches_per_epoch for s in streams] == [2, 2]  # 9 // 2 = 4 per rank, 2 batches of 2
    for epoch in range(3):
        seen = [index for s in streams for batch in s.epoch_batches(epoch) for index in batch]
        assert len(seen) == len(set(seen)) == 8
    assert streams[0].epoch_batches(0) != streams[0].epoch_batches(1)  # reshuffled per epoch


def test_stream_batches_carry_embeddings_and_resume_exactly(wan_embeddings):
    dataset = load_embeddings(wan_embeddings)
    stream = PromptBatches(dataset, 2, num_replicas=2, rank=1, seed=5)
    full = list(itertools.islice(stream.iterate(), 7))
    assert full[0]["prompt_embeds"].shape == (2, 16, dataset.hidden_size)
    expected = [dataset[int(i)]["prompt_embeds"] for i in full[0]["index"]]
    assert all((row == e).all() for row, e in zip(full[0]["prompt_embeds"], expected))
    resumed = list(itertools.islice(stream.iterate(start=3), 4))
    assert [b["index"].tolist() for b in resumed] == [b["index"].tolist() for b in full[3:]]


def test_too_few_prompts_is_a_clear_error(wan_embeddings):
    with pytest.raises(ValueError, match="cannot fill one batch of 4 on each of 3 processes"):
        PromptBatches(load_embeddings(wan_embeddings), 4, num_replicas=3, rank=0)
