"""Procedural "shapes" dataset: the embedded default, generated deterministically from a seed.

Each image shows one or two coloured shapes (kind, colour, size, grid position with a little
jitter) on a plain background, drawn with PIL at ``supersample`` x the output size and box-reduced,
so edges are anti-aliased while shape interiors keep their exact palette colour. Captions come
from several natural-language templates (some omit attributes); the ground truth is kept per item
(``attributes(i)``) for prompt-adherence evaluation, and ``label(i)`` = first shape kind x colour.
"""

from __future__ import annotations

import logging
import re
import string
import time
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from t2ilab.data.base import SPLITS, CaptionedDataModule, InMemoryCaptionedDataset

log = logging.getLogger(__name__)

# Shape colours (exact RGB; interiors of rendered shapes have exactly these values).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 30),
    "purple": (140, 60, 190), "orange": (245, 140, 30), "cyan": (30, 200, 210), "pink": (240, 120, 190),
}
# Backgrounds: disjoint from COLORS (names and values).
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128), "beige": (235, 225, 200),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross")
SIZES: dict[str, float] = {"small": 0.2, "large": 0.34}  # shape extent as a fraction of the side
# name -> (phrase used in captions, (x, y) centre as a fraction of the side)
POSITIONS: dict[str, tuple[str, tuple[float, float]]] = {
    "top left": ("in the top left", (0.2, 0.2)), "top": ("at the top", (0.5, 0.2)),
    "top right": ("in the top right", (0.8, 0.2)), "left": ("on the left", (0.2, 0.5)),
    "center": ("in the center", (0.5, 0.5)), "right": ("on the right", (0.8, 0.5)),
    "bottom left": ("in the bottom left", (0.2, 0.8)), "bottom": ("at the bottom", (0.5, 0.8)),
    "bottom right": ("in the bottom right", (0.8, 0.8)),
}
JITTER = 0.015  # max centre jitter, fraction of the side

# Fields: size/color/shape/pos of shape 1, the same with suffix 2 for shape 2, bg.
SINGLE_TEMPLATES: tuple[str, ...] = (
    "a {size} {color} {shape} {pos} on a {bg} background",
    "a {color} {shape}",
    "a picture of a {size} {color} {shape} {pos}",
    "a {color} {shape} on a {bg} background",
    "a {size} {shape} {pos}",
    "an image of a {color} {shape} {pos}",
    "a {size} {color} {shape}",
    "a {shape} {pos} on a {bg} background",
)
PAIR_TEMPLATES: tuple[str, ...] = (
    "a {color} {shape} and a {color2} {shape2} on a {bg} background",
    "a {size} {color} {shape} {pos} and a {size2} {color2} {shape2} {pos2}",
    "a picture of a {color} {shape} and a {color2} {shape2}",
    "a {color} {shape} {pos} and a {color2} {shape2} {pos2} on a {bg} background",
    "two shapes: a {color} {shape} and a {color2} {shape2}",
)
TEMPLATES: tuple[str, ...] = SINGLE_TEMPLATES + PAIR_TEMPLATES  # attributes()["template"] indexes this

_SPLIT_ID = {s: i for i, s in enumerate(SPLITS)}
_TILE = 64  # images drawn per PIL canvas


def _unit_polygon(kind: str) -> list[tuple[float, float]] | None:
    """Vertices in [-1, 1]^2 (y down); None for the circle (drawn as an ellipse)."""
    ang = -np.pi / 2 + np.arange(10) * np.pi / 5
    star = [(float(r * np.cos(a)), float(r * np.sin(a))) for r, a in zip([1.0, 0.45] * 5, ang)]
    t = 0.33
    polys = {"circle": None, "square": [(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)],
             "triangle": [(0.0, -1.0), (1.0, 0.8), (-1.0, 0.8)],
             "diamond": [(0.0, -1.0), (0.8, 0.0), (0.0, 1.0), (-0.8, 0.0)], "star": star,
             "cross": [(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1), (-t, 1), (-t, t),
                       (-1, t), (-1, -t), (-t, -t)]}
    if kind not in polys:
        raise ValueError(f"unknown shape kind {kind!r}; expected one of {SHAPES}")
    return polys[kind]


def _article(text: str) -> str:
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _mentioned(template: str) -> list[str]:
    """Attribute keys a template mentions ("color", "shape", "size", "position", "background")."""
    keys = {"size": "size", "color": "color", "shape": "shape", "pos": "position", "bg": "background"}
    return sorted({keys[f.rstrip("2")] for _, f, _, _ in string.Formatter().parse(template) if f})


def _overlap(a: tuple[float, float, float], b: tuple[float, float, float], margin: float) -> bool:
    """Boxes (cx, cy, half-extent) overlap (with a margin, fractions of the side)."""
    return abs(a[0] - b[0]) < a[2] + b[2] + margin and abs(a[1] - b[1]) < a[2] + b[2] + margin


def generate_shapes(n: int, seed: int, image_size: int = 32, colors: Sequence[str] = tuple(COLORS),
                    shapes: Sequence[str] = SHAPES, backgrounds: Sequence[str] = tuple(BACKGROUNDS),
                    max_shapes: int = 2, two_shape_prob: float = 0.3, supersample: int = 4,
                    sizes: Sequence[str] = tuple(SIZES)) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Render ``n`` images -> (uint8 array (n, H, W, 3), per-item attribute records)."""
    rng = np.random.default_rng(seed)
    pos_names, size_names = list(POSITIONS), list(sizes)
    n_shapes = np.where((max_shapes >= 2) & (rng.random(n) < two_shape_prob), 2, 1)
    draws = {k: rng.integers(0, m, size=(n, 2)).tolist() for k, m in
             (("shape", len(shapes)), ("color", len(colors)), ("size", len(size_names)),
                                                ("pos", len(pos_names)))}
    jitter = rng.uniform(-JITTER, JITTER, size=(n, 2, 2)).tolist()
    bg_idx = rng.integers(0, len(backgrounds), size=n).tolist()
    tpl_single = rng.integers(0, len(SINGLE_TEMPLATES), size=n).tolist()
    tpl_pair = (len(SINGLE_TEMPLATES) + rng.integers(0, len(PAIR_TEMPLATES), size=n)).tolist()
    n_shapes = n_shapes.tolist()
    fix_rng = np.random.default_rng([seed, 1])  # only used to re-draw colliding second shapes

    def box(p: int, s: int, j: Sequence[float]) -> tuple[float, float, float]:
        cx, cy = POSITIONS[pos_names[p]][1]
        return cx + j[0], cy + j[1], SIZES[size_names[s]] / 2

    ss, side = supersample, image_size * supersample
    polys = {k: _unit_polygon(k) for k in shapes}
    out = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    records: list[dict[str, Any]] = []
    # Draw _TILE images side by side on one canvas and reduce it once (tiles are multiples of ss
    # wide and shapes stay inside their tile, so nothing bleeds across): amortises PIL overhead.
    canvas = Image.new("RGB", (side * _TILE, side))
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        objs = [(draws["shape"][i][0], draws["color"][i][0], draws["size"][i][0], draws["pos"][i][0],
                 jitter[i][0])]
        if n_shapes[i] == 2:
            sh, co, sz, po, jt = (draws["shape"][i][1], draws["color"][i][1], draws["size"][i][1],
                                  draws["pos"][i][1], jitter[i][1])
            box0 = box(objs[0][3], objs[0][2], objs[0][4])
            for _ in range(100):  # distinct (kind, colour) and no overlap with the first shape
                distinct = (sh, co) != objs[0][:2] or len(shapes) * len(colors) == 1
                if distinct and not _overlap(box0, box(po, sz, jt), 0.01):
                    break
                sh, co, sz, po = (int(v) for v in fix_rng.integers(
                    0, (len(shapes), len(colors), len(size_names), len(pos_names))))
                jt = fix_rng.uniform(-JITTER, JITTER, size=2).tolist()
            else:  # no room (e.g. a large centre shape with shape_sizes=[large]): one shape only
                sh = None
            if sh is not None:
                objs.append((sh, co, sz, po, jt))
        bg = backgrounds[bg_idx[i]]
        x0 = (i % _TILE) * side
        draw.rectangle((x0, 0, x0 + side - 1, side - 1), fill=BACKGROUNDS[bg])
        shape_recs = []
        for sh, co, sz, po, jt in objs:
            cx, cy, half = box(po, sz, jt)
            fill = COLORS[colors[co]]
            px, py, r = x0 + cx * side, cy * side, half * side
            poly = polys[shapes[sh]]
            if poly is None:
                draw.ellipse((px - r, py - r, px + r, py + r), fill=fill)
            else:
                draw.polygon([(px + r * x, py + r * y) for x, y in poly], fill=fill)
            shape_recs.append({"shape": shapes[sh], "color": colors[co], "size": size_names[sz],
                               "position": pos_names[po], "center": (float(cx), float(cy))})
        tpl = tpl_pair[i] if len(objs) == 2 else tpl_single[i]
        records.append({"shapes": shape_recs, "background": bg, "template": tpl,
                        "label": objs[0][0] * len(colors) + objs[0][1]})
        if i % _TILE == _TILE - 1 or i == n - 1:
            k, first = i % _TILE + 1, i - i % _TILE
            strip = np.asarray(canvas.reduce(ss) if ss > 1 else canvas)  # (S, S*_TILE, 3)
            strip = strip.reshape(image_size, _TILE, image_size, 3)[:, :k].transpose(1, 0, 2, 3)
            out[first:first + k] = strip
    return out, records


def render_caption(record: dict[str, Any]) -> str:
    """Caption of an attribute record (its template filled with its ground truth)."""
    fields: dict[str, str] = {"bg": record["background"]}
    for k, s in enumerate(record["shapes"]):
        sfx = "" if k == 0 else str(k + 1)
        fields.update({f"size{sfx}": s["size"], f"color{sfx}": s["color"], f"shape{sfx}": s["shape"],
                       f"pos{sfx}": POSITIONS[s["position"]][0]})
    return _article(TEMPLATES[record["template"]].format(**fields))


class ShapesDataset(InMemoryCaptionedDataset):
    """One split of procedural shapes, held in memory as a uint8 tensor.

    Args:
        images: uint8 tensor (N, C, H, W).
        records: per-item ground truth (see ``generate_shapes``).
        class_names: "colour shape" names indexed by label.
    """

    has_labels = True

    def __init__(self, images: torch.Tensor, records: list[dict[str, Any]], class_names: list[str]):
        self.records, self.class_names = records, class_names
        super().__init__(images, [render_caption(r) for r in records])

    def label(self, i: int) -> int:
        return self.records[i]["label"]

    def attributes(self, i: int) -> dict[str, Any]:
        r = self.records[i]
        return {"shapes": [dict(s) for s in r["shapes"]], "background": r["background"],
                "template": r["template"], "mentioned": _mentioned(TEMPLATES[r["template"]]),
                "label": r["label"]}


class ShapesDataModule(CaptionedDataModule):
    """Procedural coloured shapes (the default dataset; no downloads).

    Args:
        name: config group choice (ignored).
        seed: base seed; each split uses a seed derived from it, so splits differ.
        num_train: number of training images.
        num_val: number of validation images.
        num_test: number of test images.
        max_shapes: 1 or 2 shapes per image.
        two_shape_prob: probability of a two-shape image when max_shapes == 2.
        colors: subset of COLORS names to use (None = all).
        shapes: subset of SHAPES to use (None = all).
        backgrounds: subset of BACKGROUNDS names to use (None = all).
        shape_sizes: subset of SIZES names ("small", "large") to use (None = both).
        supersample: render at this multiple of image_size, then box-reduce (anti-aliasing).
        image_size: output side length in pixels.
        channels: 3 (RGB) or 1 (luminance of the RGB rendering).
        batch_size: per-device batch size.
        num_workers: DataLoader workers.
        pin_memory: DataLoader pin_memory.
        text_encoder: encoder providing ``encode_text`` (None -> batches without "cond").
    """

    def __init__(self, name: str = "", seed: int = 0, num_train: int = 20000, num_val: int = 1000,
                 num_test: int = 1000, max_shapes: int = 2, two_shape_prob: float = 0.3,
                 colors: Sequence[str] | None = None, shapes: Sequence[str] | None = None,
                 backgrounds: Sequence[str] | None = None, shape_sizes: Sequence[str] | None = None,
                 supersample: int = 4, image_size: int = 32,
                 channels: int = 3, batch_size: int = 64, num_workers: int = 0, pin_memory: bool = False,
                 text_encoder: Any = None, condition_source: str = "text"):
        super().__init__(image_size=image_size, channels=channels, batch_size=batch_size,
                         num_workers=num_workers, text_encoder=text_encoder, pin_memory=pin_memory,
                         condition_source=condition_source)
        self.colors = self._subset("colors", colors, tuple(COLORS))
        self.shapes = self._subset("shapes", shapes, SHAPES)
        self.backgrounds = self._subset("backgrounds", backgrounds, tuple(BACKGROUNDS))
        self.shape_sizes = self._subset("shape_sizes", shape_sizes, tuple(SIZES))
        if max_shapes not in (1, 2):
            raise ValueError(f"max_shapes must be 1 or 2, got {max_shapes}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if not 0.0 <= two_shape_prob <= 1.0:
            raise ValueError(f"two_shape_prob must be in [0, 1], got {two_shape_prob}")
        self.seed, self.max_shapes, self.two_shape_prob = int(seed), int(max_shapes), float(two_shape_prob)
        self.supersample = int(supersample)
        self.sizes = {"train": int(num_train), "val": int(num_val), "test": int(num_test)}
        self.class_names = [f"{c} {s}" for s in self.shapes for c in self.colors]

    @staticmethod
    def _subset(what: str, chosen: Sequence[str] | None, allowed: Sequence[str]) -> tuple[str, ...]:
        if chosen is None:
            return tuple(allowed)
        chosen = tuple(str(c) for c in chosen)
        bad = [c for c in chosen if c not in allowed]
        if bad or not chosen or len(set(chosen)) != len(chosen):
            raise ValueError(f"{what}={list(chosen)} invalid: must be distinct names from {list(allowed)}")
        return chosen

    def split_seed(self, split: str) -> int:
        """Seed of one split, derived from ``seed`` (different per split)."""
        return int(np.random.SeedSequence([self.seed, _SPLIT_ID[split]]).generate_state(1)[0])

    def build_split(self, split: str) -> ShapesDataset:
        t0 = time.perf_counter()
        arr, records = generate_shapes(
            self.sizes[split], self.split_seed(split), self.image_size, self.colors, self.shapes,
            self.backgrounds, self.max_shapes, self.two_shape_prob, self.supersample, self.shape_sizes)
        images = torch.from_numpy(arr).permute(0, 3, 1, 2)
        if self.channels == 1:
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
        images = images.contiguous()
        log.info("shapes[%s]: generated %d images (%dpx) in %.2fs", split, len(records),
                 self.image_size, time.perf_counter() - t0)
        return ShapesDataset(images, records, self.class_names)
