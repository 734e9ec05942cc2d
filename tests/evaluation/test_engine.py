"""Evaluator mechanics with a cheap stand-in feature extractor: metrics present and finite,
determinism, rank sharding == single process, the reference cache (hit without re-reading real
images; key changes), sample export (PNG pixels == evaluated pixels), shape checks, settings."""

from __future__ import annotations

import json
import math

import pytest
import torch
from omegaconf import OmegaConf

from t2ilab.evaluation.engine import Evaluator
from t2ilab.evaluation.images import load_image_folder
from t2ilab.evaluation.reference import ReferenceStats, dataset_identity
from t2ilab.evaluation.results import scalar_metrics, write_metrics_json
from t2ilab.evaluation.settings import MetricsSettings

from t2ilab.utils.config import CONF_DIR

FIDELITY = ("fid", "kid_mean", "kid_std", "isc_mean", "isc_std", "precision", "recall")


class CountingDataset:
    """Wraps a split and counts ``load_image`` calls (real images read)."""

    def __init__(self, ds):
        self.ds, self.reads = ds, 0

    def __getattr__(self, name):
        return getattr(self.ds, name)

    def __len__(self):
        return len(self.ds)

    def load_image(self, i):
        self.reads += 1
        return self.ds.load_image(i)


@pytest.fixture
def run_eval(shapes_dm, tmp_path, standin, metrics_cfg):
    """run_eval(model, **metrics overrides) -> (Evaluator, result) on the small shapes data."""
    def run(model, **overrides):
        ev = Evaluator(metrics_cfg(**overrides), shapes_dm, str(tmp_path), feature_extractor=standin(0))
        return ev, ev.evaluate(model)
    return run


def test_all_metrics_finite_and_recorded(run_eval, tmp_path, noise_model):
    ev, r = run_eval(noise_model(64))
    for k in (*FIDELITY, "clip_score", "prompt_accuracy", "isc_real"):
        assert k in r and math.isfinite(r[k]), (k, r)
    assert r["skipped"] == {} and r["meta"]["num_samples"] == 48 and r["meta"]["num_reference"] == 96
    assert set(r["meta"]["stage_seconds"]) >= {"generate", "inception", "clip", "classifier"}
    assert any("randomly initialised CLIP" in w for w in r["meta"]["warnings"])
    path = write_metrics_json(r, tmp_path / "run")
    assert json.loads(path.read_text())["fid"] == pytest.approx(r["fid"])


def test_same_seed_same_numbers_and_sharding_equals_one_process(run_eval, shapes_dm, tmp_path, standin,
                                                               noise_model, metrics_cfg):
    """Three ranks' shards (round-robin chunks, padded for all_gather) concatenated in rank order
    give exactly the single-process records and metrics: what the DDP gather relies on."""
    from t2ilab.evaluation.scoring import compute

    model = noise_model(64)
    _, one = run_eval(model, prompt_accuracy=False, clip_score=False, num_samples=40)
    ev = Evaluator(metrics_cfg(prompt_accuracy=False, clip_score=False, num_samples=40), shapes_dm,
                   str(tmp_path), feature_extractor=standin(0)).prepare("cpu")
    assert scalar_metrics(compute(ev, ev.generate_shard(model))) == scalar_metrics(one)  # deterministic
    shards = [ev.generate_shard(model, rank=r, world_size=3) for r in range(3)]
    assert len({len(s["index"]) for s in shards}) == 1  # equal shapes: all_gather-able
    gathered = {k: torch.cat([s[k] for s in shards]) for k in shards[0]}  # = all_gather(...).flatten(0, 1)
    assert scalar_metrics(compute(ev, gathered)) == pytest.approx(scalar_metrics(one), rel=1e-6, abs=1e-9)
    shards[1]["index"][:] = -1  # a lost shard is an error, not a smaller N
    with pytest.raises(RuntimeError, match="exactly once"):
        compute(ev, {k: torch.cat([s[k] for s in shards]) for k in shards[0]})


@pytest.mark.parametrize("classifier", [False, True])
def test_second_evaluation_reads_no_real_images(shapes_dm, tmp_path, standin, noise_model, metrics_cfg,
                                                monkeypatch, classifier):
    counting = CountingDataset(shapes_dm.dataset("val"))
    monkeypatch.setitem(shapes_dm.datasets, "val", counting)
    cfg = metrics_cfg(prompt_accuracy=classifier, classifier_fd=classifier)
    first = standin(0)
    r1 = Evaluator(cfg, shapes_dm, str(tmp_path), feature_extractor=first).evaluate(noise_model(64))
    # real images: Inception reference once (+ classifier held-out accuracy and classifier_fd statistics)
    assert counting.reads == 96 * (3 if classifier else 1) and first.images_seen == 96 + 48
    counting.reads, second = 0, standin(0)
    r2 = Evaluator(cfg, shapes_dm, str(tmp_path), feature_extractor=second).evaluate(noise_model(64))
    assert counting.reads == 0 and second.images_seen == 48  # cache hit: only the generated images
    assert r2["fid"] == pytest.approx(r1["fid"], rel=1e-9)
    if classifier:  # the cached real classifier statistics give the same distance
        assert r2["classifier_fd"] == pytest.approx(r1["classifier_fd"], rel=1e-9) and r1["classifier_fd"] > 0


def test_reference_key_changes_with_what_defines_the_statistics(shapes_dm, standin, tmp_path):
    from t2ilab.data.shapes import ShapesDataModule

    def key(dm=shapes_dm, split="val", size=32, channels=3, n=None, ex=standin(0)):
        return ReferenceStats(tmp_path, dataset_identity(dm, split), size, channels, n, ex).key

    base = key()
    assert base == key()  # stable
    small = ShapesDataModule(seed=0, num_train=256, num_val=96, num_test=32, image_size=16)
    gray = ShapesDataModule(seed=0, num_train=256, num_val=96, num_test=32, channels=1)
    other_seed = ShapesDataModule(seed=1, num_train=256, num_val=96, num_test=32)
    changed = [key(split="test"), key(dm=small, size=16), key(dm=gray, channels=1), key(dm=other_seed),
               key(n=50), key(ex=standin(1))]
    assert len({base, *changed}) == 1 + len(changed)
    # serving settings are not identity: batch size / the text encoder do not change the key
    served = ShapesDataModule(seed=0, num_train=256, num_val=96, num_test=32, batch_size=7)
    served.shuffle_seed = 3  # training order (set by train.py, not by eval): not identity either
    assert key(dm=served) == base


def test_saved_pngs_are_the_evaluated_pixels(shapes_dm, tmp_path, standin, noise_model, metrics_cfg):
    ev = Evaluator(metrics_cfg(prompt_accuracy=False, clip_score=False, num_samples=20, table_size=20),
                   shapes_dm, str(tmp_path), feature_extractor=standin(0))
    ev.evaluate(noise_model(64), sample_dir=str(tmp_path / "samples"))
    on_disk = load_image_folder(tmp_path / "samples")
    assert torch.equal(on_disk, ev.thumbnails["image"])  # same uint8 pixels as Inception/CLIP saw
    rows = [json.loads(line) for line in (tmp_path / "samples" / "prompts.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ev.plan.prompts and rows[0]["file"] == "000000.png"
    assert {"seed", "label", "index"} <= set(rows[0])


def test_resolution_mismatch_is_an_error(run_eval, noise_model):
    with pytest.raises(ValueError, match="16, 16.*32, 32"):
        run_eval(noise_model(64, size=16), prompt_accuracy=False)


def test_metrics_defaults_come_from_the_yaml_and_types_are_checked():
    yaml_cfg = OmegaConf.load(CONF_DIR / "metrics" / "default.yaml")
    s = MetricsSettings.from_config({"clip": {"batch_size": 8}})
    assert s.num_samples == yaml_cfg.num_samples and s.kid_subsets == yaml_cfg.kid_subsets
    assert s.clip["batch_size"] == 8 and s.clip["model_name"] == yaml_cfg.clip.model_name  # nested: merged
    with pytest.raises(ValueError, match="num_sampels"):
        MetricsSettings.from_config({"num_sampels": 10})
    with pytest.raises(ValueError, match=r"metrics.fid='yes' \(str\) must be true or false"):
        MetricsSettings.from_config({"fid": "yes"})


def test_eval_entry_config_merges_checkpoint_data_with_this_machines_paths(tmp_path):
    from hydra import compose, initialize_config_dir

    from t2ilab.models.checkpoint import eval_data_configs

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=["ckpt_path=x.ckpt", "+data.num_val=7", f"paths.cache_dir={tmp_path}",
                                         f"paths.data_dir={tmp_path / 'data'}", "logger=none"])
    train_cfg = OmegaConf.create({"data": {"_target_": "t2ilab.data.shapes.ShapesDataModule", "num_val": 100,
                                           "seed": 3, "data_dir": "/training/machine"},
                                  "encoder": {"name": "clip_tiny", "cache_dir": "/training/cache"}})
    data, encoder = eval_data_configs(cfg, train_cfg)
    assert (data.num_val, data.seed, data.data_dir) == (7, 3, str(tmp_path / "data"))
    assert encoder.cache_dir == str(tmp_path) and encoder.name == "clip_tiny"
    assert MetricsSettings.from_config(cfg.metrics).num_samples == 1000 and cfg.optimized_metric == "fid"


def test_postprocessed_evaluation_is_stated_and_differs(run_eval, noise_model, shapes_dm, tmp_path, metrics_cfg):
    """metrics.postprocess evaluates post-processed images and says so; the default evaluates raw ones."""
    off = dict(prompt_accuracy=False, clip_score=False, kid=False, isc=False, prc=False, num_samples=32)
    _, raw = run_eval(noise_model(64), **off)
    _, sharp = run_eval(noise_model(64), **off, postprocess=[{"kind": "sharpen", "amount": 1.0}])
    assert raw["meta"]["postprocess"] == [] and sharp["meta"]["postprocess"][0]["kind"] == "sharpen"
    assert sharp["fid"] != pytest.approx(raw["fid"])
    with pytest.raises(ValueError, match="metrics.postprocess: upscale"):
        Evaluator(metrics_cfg(postprocess=[{"kind": "upscale"}]), shapes_dm, str(tmp_path))
