"""Procedural shapes: determinism, caption/attribute/pixel agreement, subsets, batches."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
import torch

from t2ilab.data.shapes import (BACKGROUNDS, COLORS, PAIR_TEMPLATES, POSITIONS, SHAPES, SINGLE_TEMPLATES,
                                ShapesDataModule)

SIZE_WORDS = ("small", "large")


def make(**kw) -> ShapesDataModule:
    args = dict(seed=0, num_train=300, num_val=60, num_test=60, batch_size=32)
    args.update(kw)
    return ShapesDataModule(**args)


def mentions(caption: str, vocab: dict[str, str]) -> list[str]:
    """Attribute values mentioned in the caption, in order of appearance (vocab: phrase -> value)."""
    hits = []
    for phrase, value in vocab.items():
        hits += [(m.start(), value) for m in re.finditer(rf"\b{re.escape(phrase)}\b", caption)]
    return [v for _, v in sorted(hits)]


def test_same_seed_same_bytes_different_seed_different():
    a, b, c = make(seed=7), make(seed=7), make(seed=8)
    ta, tb, tc = a.dataset("train"), b.dataset("train"), c.dataset("train")
    assert ta.images.numpy().tobytes() == tb.images.numpy().tobytes()
    assert ta.captions() == tb.captions()
    assert [ta.attributes(i) for i in range(len(ta))] == [tb.attributes(i) for i in range(len(tb))]
    assert not torch.equal(ta.images, tc.images)
    assert ta.captions() != tc.captions()
    # splits are generated from different derived seeds
    assert not torch.equal(a.dataset("val").images, a.dataset("test").images)
    assert a.dataset("val").captions() != ta.captions()[:60]


def test_captions_agree_with_attributes():
    ds = make(num_train=400).dataset("train")
    colors = {c: c for c in COLORS}
    shapes = {s: s for s in SHAPES}
    sizes = {s: s for s in SIZE_WORDS}
    positions = {phrase: name for name, (phrase, _) in POSITIONS.items()}
    templates, n_pairs = Counter(), 0
    for i in range(len(ds)):
        cap, att = ds.caption(i), ds.attributes(i)
        objs = att["shapes"]
        n_pairs += len(objs) == 2
        templates[att["template"]] += 1
        # every mentioned colour / shape / size / position is the ground truth, in shape order
        for key, vocab in (("color", colors), ("shape", shapes), ("size", sizes), ("position", positions)):
            said = mentions(cap, vocab)
            if key in att["mentioned"]:
                assert said == [o[key] for o in objs], (cap, att)
            else:
                assert said == [], (cap, att)
        bg = re.findall(r"on an? (\w+) background", cap)
        assert bg == ([att["background"]] if "background" in att["mentioned"] else []), (cap, att)
        assert ds.class_names[ds.label(i)] == f"{objs[0]['color']} {objs[0]['shape']}"
        assert ds.label(i) == SHAPES.index(objs[0]["shape"]) * len(COLORS) + list(COLORS).index(objs[0]["color"])
    assert 0.15 < n_pairs / len(ds) < 0.45  # two_shape_prob=0.3
    assert len(templates) >= len(SINGLE_TEMPLATES) + len(PAIR_TEMPLATES) - 2  # templates vary per item
    assert not re.search(r"\ba [aeiou]", "\n".join(ds.captions()))  # "an orange ...", not "a orange"


def test_pixels_agree_with_attributes():
    ds = make(num_train=300, max_shapes=1).dataset("train")
    palette = {name: np.array(rgb) for name, rgb in COLORS.items()}
    grid = {"left": 0, "right": 2, "top": 0, "bottom": 2}
    areas: dict[tuple[str, str], list[int]] = {}
    for i in range(len(ds)):
        img = ds.load_image(i).permute(1, 2, 0).numpy().astype(int)  # (H, W, 3)
        att = ds.attributes(i)
        (obj,) = att["shapes"]
        bg = np.array(BACKGROUNDS[att["background"]])
        # the background is the most common pixel value
        vals, counts = np.unique(img.reshape(-1, 3), axis=0, return_counts=True)
        assert (vals[counts.argmax()] == bg).all(), (i, att)
        # the dominant palette colour (exact matches: interiors are exact) is the attribute colour
        exact = {n: int((img == rgb).all(-1).sum()) for n, rgb in palette.items()}
        assert max(exact, key=exact.get) == obj["color"] and exact[obj["color"]] > 0, (exact, att)
        # the shape's centroid lies in the grid cell named by the position
        fg = np.abs(img - bg).sum(-1) > 30
        ys, xs = np.nonzero(fg)
        cell = (int(xs.mean() / img.shape[1] * 3), int(ys.mean() / img.shape[0] * 3))
        want = [1, 1]
        for word in obj["position"].split():
            if word in ("left", "right"):
                want[0] = grid[word]
            elif word in ("top", "bottom"):
                want[1] = grid[word]
        assert cell == tuple(want), (cell, obj)
        areas.setdefault((obj["shape"], obj["size"]), []).append(int(fg.sum()))
    for shape in SHAPES:  # large shapes cover more pixels than small ones of the same kind
        small, large = areas.get((shape, "small")), areas.get((shape, "large"))
        if small and large:
            assert min(large) > max(small), (shape, small, large)
    # anti-aliasing: edge pixels are blends, i.e. neither background nor a palette colour
    img = ds.load_image(0).permute(1, 2, 0).numpy().astype(int)
    bg = np.array(BACKGROUNDS[ds.attributes(0)["background"]])
    blended = ~(img == bg).all(-1) & ~np.any([(img == c).all(-1) for c in palette.values()], axis=0)
    assert blended.sum() > 0


def test_subsets_and_options():
    dm = make(colors=["red", "blue"], shapes=["circle", "star"], backgrounds=["white"], max_shapes=1)
    ds = dm.dataset("train")
    assert ds.class_names == ["red circle", "blue circle", "red star", "blue star"]
    seen = Counter()
    for i in range(len(ds)):
        (obj,) = ds.attributes(i)["shapes"]
        assert obj["color"] in ("red", "blue") and obj["shape"] in ("circle", "star")
        assert ds.attributes(i)["background"] == "white"
        assert ds.class_names[ds.label(i)] == f"{obj['color']} {obj['shape']}"
        seen[ds.label(i)] += 1
    assert set(seen) == {0, 1, 2, 3}
    gray = make(channels=1, image_size=16).dataset("val")
    assert gray.images.shape == (60, 1, 16, 16) and gray.images.dtype == torch.uint8
    with pytest.raises(ValueError, match="colors"):
        make(colors=["red", "teal"])
    with pytest.raises(ValueError, match="max_shapes"):
        make(max_shapes=3)
    with pytest.raises(ValueError, match="shape_sizes"):
        make(shape_sizes=["huge"])


def test_shape_sizes_subset():
    """shape_sizes=[large]: every shape (incl. second shapes) is large, and pairs still get placed
    (a large centre shape leaves no room for a second large one: that image keeps one shape)."""
    ds = make(shape_sizes=["large"], max_shapes=2, two_shape_prob=0.5).dataset("train")
    objs = [o for i in range(len(ds)) for o in ds.attributes(i)["shapes"]]
    assert {o["size"] for o in objs} == {"large"}
    n_pairs = sum(len(ds.attributes(i)["shapes"]) == 2 for i in range(len(ds)))
    assert 0.25 * len(ds) < n_pairs < 0.5 * len(ds)
    pairs = [ds.attributes(i)["shapes"] for i in range(len(ds))]
    assert all(p[0]["position"] != "center" for p in pairs if len(p) == 2)
    # null (both sizes) draws exactly the images of an explicit [small, large]
    both, default = make(shape_sizes=["small", "large"]).dataset("val"), make().dataset("val")
    assert torch.equal(both.images, default.images)


def test_batches_and_cond_rows(fake_encoder):
    dm = make(text_encoder=fake_encoder, name="shapes")
    dm.setup("fit")
    assert fake_encoder.calls == 1  # one table for all unique train+val captions
    assert set(fake_encoder.seen) == set(dm.dataset("train").captions()) | set(dm.dataset("val").captions())
    lo, hi = 1.0, -1.0
    for n, batch in enumerate(dm.train_dataloader()):
        assert batch["image"].shape == (32, 3, 32, 32) and batch["image"].dtype == torch.float32
        lo, hi = min(lo, batch["image"].min().item()), max(hi, batch["image"].max().item())
        assert batch["label"].dtype == torch.long and batch["label"].max() < len(dm.class_names)
        ds = dm.dataset("train")
        assert batch["caption"] == [ds.caption(int(i)) for i in batch["index"]]
        fake_encoder.check_cond(batch)
    assert n + 1 == 300 // 32  # drop_last
    assert lo == -1.0 and hi == 1.0  # black and white backgrounds map to the range ends exactly
    assert fake_encoder.calls == 1  # iterating never runs the encoder
    # test split after setup("fit"): its new captions must get rows too
    batch = next(iter(dm.test_dataloader()))
    fake_encoder.check_cond(batch)
