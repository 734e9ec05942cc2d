"""Two-shape prompt adherence of diffusion checkpoints trained on ``experiment=shapes_pairs``.

    python scripts/pair_adherence.py CKPT [CKPT ...] [--prompts 300] [--per-prompt 2] [--out pairs.json]

Trains the multi-label pair classifier on the checkpoints' real training split (evaluation/pairs.py),
reports its held-out ceiling, then generates ``--per-prompt`` images for the first ``--prompts``
two-shape test captions per checkpoint (model default sampling) and scores them."""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch
from hydra.utils import instantiate

from t2ilab.evaluation.pairs import PairClassifier, pair_targets, score
from t2ilab.models.checkpoint import load_model
from t2ilab.models.generation import generate_images
from t2ilab.utils.builders import build_encoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpts", nargs="+")
    ap.add_argument("--prompts", type=int, default=300)
    ap.add_argument("--per-prompt", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    _, cfg = load_model(args.ckpts[0])
    dm = instantiate(cfg.data, text_encoder=None, _recursive_=False)
    train, test = dm.dataset("train"), dm.dataset("test")
    pairs = list(itertools.product(dm.colors, dm.shapes))
    clf = PairClassifier(pairs, dm.channels, dm.image_size).fit(train)
    items, targets = pair_targets(test, pairs)
    real = torch.stack([test.load_image(i) for i in items]).float() / 255
    report = {"ceiling_real_test": score(clf.logits(real), targets), "n_real": len(items), "runs": {}}
    items, targets = items[:args.prompts], targets[:args.prompts]
    prompts = [test.caption(i) for i in items]
    for path in args.ckpts:
        model, train_cfg = load_model(path)
        cond = build_encoder(train_cfg.encoder, train_cfg).encode_text(prompts)
        t0 = time.perf_counter()
        images, _ = generate_images(model, cond, num_per_prompt=args.per_prompt, seed=args.seed)
        res = score(clf.logits(images), targets.repeat_interleave(args.per_prompt, 0))
        res.update({"cond_type": train_cfg.model.get("cond_type", "pooled"), "seconds": time.perf_counter() - t0,
                    "n_images": len(images)})
        report["runs"][path] = res
        print(f"{path}: both {res['both']:.3f}  per-shape {res['per_shape']:.3f}  ({res['cond_type']}, N={len(images)})")
    print(f"ceiling (real test images, N={report['n_real']}): both {report['ceiling_real_test']['both']:.3f}  "
          f"per-shape {report['ceiling_real_test']['per_shape']:.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
