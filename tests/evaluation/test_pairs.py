"""Two-shape adherence scoring (evaluation/pairs.py): binding errors count as wrong."""

from __future__ import annotations

import torch

from t2ilab.data.shapes import ShapesDataModule
from t2ilab.evaluation.pairs import pair_targets, score

PAIRS = [("red", "circle"), ("red", "square"), ("blue", "circle"), ("blue", "square")]


def test_score_counts_swapped_colours_as_wrong():
    targets = torch.tensor([[1.0, 0, 0, 1], [1.0, 0, 0, 1], [0, 1.0, 1, 0]])
    logits = torch.tensor([[5.0, 0, 0, 4],    # red circle + blue square: right
                           [0.0, 5, 4, 0],    # red square + blue circle: colours swapped
                           [0.0, 5, 1, 3]])   # one of two right
    s = score(logits, targets)
    assert abs(s["both"] - 1 / 3) < 1e-6 and abs(s["per_shape"] - (1 + 0 + 0.5) / 3) < 1e-6


def test_pair_targets_follow_the_rendered_ground_truth():
    dm = ShapesDataModule(seed=1, num_train=40, num_val=4, num_test=4, max_shapes=2, two_shape_prob=1.0,
                          colors=["red", "blue"], shapes=["circle", "square"], backgrounds=["white"])
    ds = dm.dataset("train")
    items, y = pair_targets(ds, PAIRS)
    assert items and y.shape == (len(items), 4) and (y.sum(1) == 2).all()  # two distinct pairs each
    for i, row in zip(items, y):
        caption = ds.caption(i)
        for k in row.nonzero().flatten().tolist():
            assert f"{PAIRS[k][0]} {PAIRS[k][1]}" in caption
