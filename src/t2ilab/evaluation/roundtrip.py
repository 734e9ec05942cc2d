"""Image -> caption -> image round trip of a checkpoint (``python -m t2ilab.roundtrip``).

Each input image is captioned by CLIP retrieval over a caption bank (evaluation/caption_bank.py),
the checkpoint regenerates an image from that caption (the one generation path; conditioning
built exactly as in training), and three things are measured:

* retrieval accuracy: the retrieved caption states the input's label (labelled inputs only; a
  check of the CLIP model and the bank, not of the generator);
* image CLIP similarity: cos(CLIP(input), CLIP(regeneration)) with ``metrics.clip``;
* classifier agreement: the dataset's reference classifier (the cached one ``t2ilab.eval`` uses)
  gives input and regeneration the same class.

CLIP image embeddings of one domain are all alike, so every pairwise number comes with a
``*_baseline``: the same measure between input i and the regeneration of input i+1 (shuffled
pairs). A model whose regenerations match their inputs beats its baseline clearly.

Inputs (``inputs=``): a folder of images (labels from a ``prompts.jsonl`` beside them, as
``t2ilab.sample`` writes, when present), ``split:<train|val|test>`` (real images with labels) or
``samples`` (the model's own samples of the dataset's prompts: a consistency check). Inputs are
converted to the checkpoint's channels and resized (antialiased) to its image size, so input and
regeneration are compared like for like. Regeneration i uses seed ``regen_seed + i``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from t2ilab.evaluation.caption_bank import CaptionBank, caption_labeler, retrieve
from t2ilab.evaluation.images import SampleWriter, list_images, stack_images, to_uint8
from t2ilab.utils.io import atomic_write

log = logging.getLogger(__name__)

INPUTS_HELP = "inputs=DIR (a folder of images), inputs=split:val (real images with labels) or inputs=samples"


@dataclass
class Inputs:
    """uint8 images (N,C,H,W) at the checkpoint's geometry, their labels (None = unknown), where
    each came from, and the prompt it was generated from (samples / prompts.jsonl; else None)."""

    images: torch.Tensor
    labels: list[int | None]
    sources: list[str]
    prompts: list[str | None]


def fit_images(images: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """uint8 (N,C,H,W) -> uint8 (N, channels, size, size): luminance / channel repeat, antialiased resize."""
    x = images
    if x.shape[1] == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        x = (x.float() * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    elif x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = x.round_().clamp_(0, 255).to(torch.uint8)
    return x.contiguous()


def folder_inputs(directory: str | os.PathLike, dm: Any, num: int | None) -> Inputs:
    """The first ``num`` images of a folder (sorted names); labels from its prompts.jsonl if any."""
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise FileNotFoundError(f"inputs={directory}: no such folder ({INPUTS_HELP})")
    files = list_images(d)[:num] if num else list_images(d)
    rows: dict[str, dict] = {}
    if (d / "prompts.jsonl").is_file():
        rows = {r["file"]: r for r in map(json.loads, (d / "prompts.jsonl").read_text().splitlines()) if "file" in r}
    label_of, mode = caption_labeler(dm), "L" if dm.channels == 1 else "RGB"
    images, labels, prompts = [], [], []
    for f in files:
        arr = np.asarray(Image.open(f).convert(mode))
        t = torch.from_numpy(arr.copy()).unsqueeze(0) if arr.ndim == 2 else torch.from_numpy(arr.copy()).permute(2, 0, 1)
        images.append(fit_images(t[None], dm.channels, dm.image_size)[0])
        row = rows.get(Path(f).name, {})
        prompts.append(row.get("prompt"))
        labels.append(row["label"] if row.get("label") is not None else
                      (label_of(row["prompt"]) if row.get("prompt") else None))
    return Inputs(torch.stack(images), labels, [str(f) for f in files], prompts)


def split_inputs(dm: Any, split: str, num: int | None, seed: int) -> Inputs:
    """``num`` real images of a split (a seeded random subset, in index order) with their labels."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"inputs=split:{split}: the split must be train, val or test")
    ds = dm.dataset(split)
    idx = np.arange(len(ds)) if not num or num >= len(ds) else np.sort(
        np.random.default_rng([seed, 2]).permutation(len(ds))[:num])
    labels = [int(ds.label(int(i))) if getattr(ds, "has_labels", False) else None for i in idx]
    images = fit_images(stack_images(ds, idx), dm.channels, dm.image_size)
    return Inputs(images, labels, [f"split:{split}#{int(i)}" for i in idx], [None] * len(idx))


def sample_inputs(model: Any, encoder: Any, dm: Any, split: str, num: int, seed: int, batch_size: int,
                  sampling: dict) -> Inputs:
    """The model's own samples of ``num`` prompts of the split (eval's plan: seeds ``seed + i``);
    labels where the prompt states them."""
    from t2ilab.evaluation.plan import SamplePlan
    from t2ilab.models.generation import generate_images

    plan = SamplePlan(dm.dataset(split), int(num), batch_size, seed)
    images, _ = generate_images(model, encoder.encode_text(plan.prompts).float(), 1, seed, batch_size, **sampling)
    labels = [int(y) if ok else None for y, ok in zip(plan.labels.tolist(), plan.label_ok.tolist())]
    return Inputs(to_uint8(images), labels, [f"sample#{i}" for i in range(plan.n)], list(plan.prompts))


def load_inputs(spec: str, model: Any, encoder: Any, dm: Any, num: int | None, seed: int, batch_size: int,
                sampling: dict, split: str) -> Inputs:
    """Inputs for ``inputs=spec`` (see the module docstring)."""
    spec = str(spec)
    if spec == "samples":
        return sample_inputs(model, encoder, dm, split, int(num or 64), seed, batch_size, sampling)
    if spec.startswith("split:"):
        return split_inputs(dm, spec.split(":", 1)[1], num, seed)
    return folder_inputs(spec, dm, num)


def reference_classifier(dm: Any, metrics: Any, cache_dir: str, device: Any) -> tuple[Any, str | None]:
    """(the dataset's cached ReferenceClassifier — same key as ``t2ilab.eval``'s —, None) or (None, reason)."""
    from t2ilab.evaluation.classifier import ReferenceClassifier
    from t2ilab.evaluation.reference import dataset_identity

    ds = dm.dataset(metrics.split)
    if not getattr(ds, "has_labels", False):
        return None, f"the {metrics.split!r} split of {type(dm).__name__} has no labels"
    names = getattr(ds, "class_names", None) or getattr(dm, "class_names", None)
    c = metrics.classifier
    identity = {**dataset_identity(dm, metrics.split), "trained_on": "train"}
    clf = ReferenceClassifier(cache_dir, identity, dm.image_size, dm.channels, len(names), epochs=c["epochs"],
                              max_train=c["max_train"], batch_size=c["batch_size"], lr=c["lr"], width=c["width"],
                              seed=c["seed"], device=device)
    return clf.load_or_train(lambda: dm.dataset("train"), ds), None


def _mean(values: list[bool | float]) -> float | None:
    return float(np.mean(values)) if values else None


def run(model: Any, encoder: Any, inputs: Inputs, bank: CaptionBank, clip: Any, classifier: Any,
        regen_seed: int, batch_size: int, sampling: dict) -> tuple[list[dict], torch.Tensor, dict[str, Any]]:
    """Retrieve, regenerate, measure: (per-input records, regenerations uint8, metrics).

    Args:
        model: the checkpoint's model (``generate``).
        encoder: its conditioning encoder (``build_encoder(enc_cfg, train_cfg)``).
        inputs: the input images.
        bank: the caption bank.
        clip: the ``metrics.clip`` OpenCLIPEncoder (retrieval and image similarity).
        classifier: ReferenceClassifier or None.
        regen_seed: regeneration i uses seed ``regen_seed + i``.
        batch_size: images per generate call.
        sampling: ``generate`` options.
    """
    from t2ilab.models.generation import generate_images

    n = len(inputs.sources)
    feats_in = clip.encode_image(inputs.images.float() / 255)
    idx_t, score = retrieve(feats_in, bank.features(clip))
    idx = idx_t.tolist()
    captions = [bank.captions[i] for i in idx]
    cond = encoder.encode_text(captions).float()
    regen = to_uint8(generate_images(model, cond, 1, regen_seed, batch_size, **sampling)[0])
    feats_out = clip.encode_image(regen.float() / 255)
    sim = (feats_in * feats_out).sum(1)
    shifted = feats_out.roll(-1, 0)  # input i vs the regeneration of input i+1
    metrics: dict[str, Any] = {"num_inputs": n, "bank_size": len(bank), "retrieval_score": float(score.mean()),
                               "image_clip_similarity": float(sim.mean()),
                               "image_clip_similarity_baseline": float((feats_in * shifted).sum(1).mean())}
    skipped: dict[str, str] = {}
    pred_in = pred_out = None
    if classifier is not None:
        pred_in, pred_out = classifier.predict(inputs.images), classifier.predict(regen)
        metrics["classifier_agreement"] = float((pred_in == pred_out).float().mean())
        metrics["classifier_agreement_baseline"] = float((pred_in == pred_out.roll(-1, 0)).float().mean())
    else:
        skipped["classifier_agreement"] = "no reference classifier (dataset without labels)"
    records, hits, regen_ok, input_ok = [], [], [], []
    for i in range(n):
        y, y_cap = inputs.labels[i], bank.labels[idx[i]]
        rec = {"index": i, "input": inputs.sources[i], "input_file": f"inputs/{SampleWriter.filename(i)}",
               "caption": captions[i], "score": float(score[i]), "regenerated": f"regenerated/{SampleWriter.filename(i)}",
               "seed": int(regen_seed) + i, "image_clip_similarity": float(sim[i]), "label": y, "caption_label": y_cap}
        if inputs.prompts[i] is not None:
            rec["input_prompt"] = inputs.prompts[i]
        if y is not None:
            rec["retrieved_correct"] = y_cap == y
            hits.append(y_cap == y)
        if pred_in is not None:
            rec.update(input_pred=int(pred_in[i]), regen_pred=int(pred_out[i]), agree=bool(pred_in[i] == pred_out[i]))
            if y_cap is not None:
                regen_ok.append(int(pred_out[i]) == y_cap)
            if y is not None:
                input_ok.append(int(pred_in[i]) == y)
        records.append(rec)
    for key, values, why in (("retrieval_accuracy", hits, "no input has a known label"),
                             ("regen_prompt_accuracy", regen_ok, "no classifier or no retrieved caption states a label"),
                             ("input_classifier_accuracy", input_ok, "no classifier or no labelled input")):
        if values:
            metrics[key] = _mean(values)
        else:
            skipped[key] = why
    metrics["num_labelled"] = len(hits)
    metrics["skipped"] = skipped
    return records, regen, metrics


OUTPUTS = ("roundtrip.jsonl", "roundtrip_grid.png", "inputs", "regenerated", "wandb")
"""What a round trip writes into its out_dir (besides the run records): what ``overwrite=true`` replaces."""


def write_outputs(out_dir: Path, inputs: Inputs, regen: torch.Tensor, records: list[dict],
                  grid_rows: int) -> dict[str, Path]:
    """inputs/ + regenerated/ PNGs, roundtrip.jsonl (atomic) and roundtrip_grid.png (caption | input |
    regeneration per row, first ``grid_rows`` inputs); returns the paths."""
    from t2ilab.tracking.grid import write_grid

    for name, imgs in (("inputs", inputs.images), ("regenerated", regen)):
        for stale in (out_dir / name).glob("*.png"):  # an earlier, larger round trip into the same out_dir
            stale.unlink()
        SampleWriter(out_dir / name).write_images(imgs, range(len(imgs)))
    path = atomic_write(out_dir / "roundtrip.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    k = min(len(records), int(grid_rows))
    pairs = torch.stack([inputs.images[:k], regen[:k]], 1).flatten(0, 1)  # input, regeneration, input, ...
    labels = [f"{r['caption']} ({r['score']:.2f})" for r in records[:k]]
    grid = write_grid(pairs, labels, 2, out_dir / "roundtrip_grid.png") if k else None
    return {"jsonl": path, "grid": out_dir / "roundtrip_grid.png" if grid is not None else None}


def wandb_table(records: list[dict], inputs: Inputs, regen: torch.Tensor, class_names: list[str] | None,
                rows: int) -> Any:
    """wandb.Table of the first ``rows`` round trips (input, caption, score, regeneration, ...)."""
    import wandb

    def name(y: int | None) -> Any:
        return class_names[y] if class_names and y is not None and 0 <= y < len(class_names) else y

    def img(u8: torch.Tensor) -> Any:
        arr = u8.permute(1, 2, 0).numpy()
        return wandb.Image(arr[..., 0] if arr.shape[-1] == 1 else arr)

    table = wandb.Table(columns=["index", "input", "caption", "score", "regenerated", "image_clip_similarity",
                                 "label", "caption_label", "input_pred", "regen_pred"])
    for r in records[:rows]:
        i = r["index"]
        table.add_data(i, img(inputs.images[i]), r["caption"], r["score"], img(regen[i]), r["image_clip_similarity"],
                       name(r["label"]), name(r["caption_label"]), name(r.get("input_pred")), name(r.get("regen_pred")))
    return table
