"""The training order a resumed run continues exactly (data/order.py) and validation noise that
leaves the training RNG alone (models/training_state.fixed_rng)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from t2ilab.data.order import ResumableRandomSampler
from t2ilab.models.training_state import fixed_rng


def test_epoch_order_is_seeded_per_epoch_and_ignores_the_global_rng():
    s = ResumableRandomSampler(20, seed=7)
    torch.manual_seed(0)
    first = list(s)
    torch.manual_seed(123)
    assert list(s) == first and sorted(first) == list(range(20))
    s.set_epoch(1)
    assert list(s) != first and list(ResumableRandomSampler(20, seed=8)) != first


def test_skip_resumes_inside_the_epoch_once():
    s = ResumableRandomSampler(20, seed=7)
    s.set_epoch(2)
    full = list(s)
    s.skip(8)
    assert list(s) == full[8:]
    assert list(s) == full  # one-shot
    loader = DataLoader(list(range(20)), batch_size=4, sampler=s, drop_last=True)
    s.skip(8)
    assert [b.tolist() for b in loader] == [full[i:i + 4] for i in (8, 12, 16)]


def test_fixed_rng_is_reproducible_and_leaves_the_global_state_untouched():
    torch.manual_seed(1)
    expected_next = torch.rand(3)
    torch.manual_seed(1)
    with fixed_rng(5, torch.device("cpu")):
        a = torch.randn(4)
    with fixed_rng(5, torch.device("cpu")):
        b = torch.randn(4)
    assert torch.equal(a, b) and torch.equal(torch.rand(3), expected_next)


def test_ddp_shards_are_disjoint_cover_the_epoch_and_follow_set_epoch():
    from torch.utils.data import DistributedSampler

    for n in (20, 21):  # 21: padded with the permutation's first item so both ranks get 11
        single = ResumableRandomSampler(n, seed=7)
        ranks = [ResumableRandomSampler(n, seed=7, num_replicas=2, rank=r) for r in (0, 1)]
        assert isinstance(ranks[0], DistributedSampler)  # Lightning does not re-wrap it
        for epoch in (0, 1):
            for s in (single, *ranks):
                s.set_epoch(epoch)
            shards = [list(s) for s in ranks]
            assert [len(x) for x in shards] == [len(s) for s in ranks] == [(n + 1) // 2] * 2
            assert set(shards[0]) | set(shards[1]) == set(range(n))
            assert len(set(shards[0]) & set(shards[1])) == (n % 2)  # only the padding item repeats
            # interleaved, the shards are the single-process order of that epoch
            assert [i for pair in zip(*shards) for i in pair][:n] == list(single)
    s0 = ResumableRandomSampler(20, seed=7, num_replicas=2, rank=0)
    s0.set_epoch(0)
    e0 = list(s0)
    s0.set_epoch(1)
    assert list(s0) != e0  # set_epoch reaches the order


def test_ddp_skip_counts_this_ranks_items():
    ranks = [ResumableRandomSampler(20, seed=7, num_replicas=2, rank=r) for r in (0, 1)]
    full = [list(s) for s in ranks]
    for s, f in zip(ranks, full):
        s.skip(4)  # 2 batches of 2 trained by this rank
        loader = DataLoader(list(range(20)), batch_size=2, sampler=s, drop_last=True)
        assert [b.tolist() for b in loader] == [f[i:i + 2] for i in range(4, 10, 2)]
    assert ResumableRandomSampler(20, seed=7).num_replicas == 1  # no process group: single process
