#!/usr/bin/env python
"""Real-data floor of the offline metrics at N: REAL images of one split evaluated as if generated
(prompt accuracy = the reference classifier's own accuracy on those prompts; classifier_fd =
real-vs-real Frechet distance at the same N, the number a perfect model would get).

  python scripts/real_floor.py experiment=fmnist_diffusion --split test --num-samples 5000
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="train-config overrides naming the data (e.g. experiment=fmnist_vae)")
    p.add_argument("--split", default="test", help="where the real images come from (the reference is metrics.split)")
    p.add_argument("--num-samples", type=int, default=5000)
    p.add_argument("--cache-dir", default=None, help="reference/classifier cache (default: paths.cache_dir)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from t2ilab.bench.common import compose
    from t2ilab.evaluation.engine import Evaluator
    from t2ilab.evaluation.replay import RealImageReplay
    from t2ilab.utils.builders import build_datamodule, build_encoder

    cfg = compose(args.overrides)
    cache = args.cache_dir or str(cfg.paths.cache_dir) or tempfile.mkdtemp()
    dm = build_datamodule(cfg.data, build_encoder(cfg.encoder))
    settings = {**dict(cfg.metrics), "num_samples": args.num_samples, "fid": False, "kid": False, "isc": False,
                "prc": False, "clip_score": False, "prompt_accuracy": True, "classifier_fd": True}
    result = Evaluator(settings, dm, cache).evaluate(RealImageReplay(dm, args.split))
    keep = {k: v for k, v in result.items() if k != "meta" and not isinstance(v, (list, dict))}
    print(json.dumps({"split": args.split, "num_samples": args.num_samples, **keep}, indent=1, default=str))


if __name__ == "__main__":
    main()
