"""The training order a resumed run continues exactly (data/sampler.py) and validation noise that
leaves the training RNG alone (models/training_state.fixed_rng)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from t2ilab.data.sampler import ResumableRandomSampler
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
