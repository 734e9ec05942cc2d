"""Dead models never score: ``sample`` and ``eval`` refuse a checkpoint whose weights hold NaN (naming a
healthy checkpoint beside it), and a generation that returns NaN pixels fails instead of writing black PNGs
or a metric."""

from __future__ import annotations

import pytest
import torch

from cli_helpers import copy_of, run
from t2ilab.models.generation import NonFiniteImagesError, iter_generate


class _NaNModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def generate(self, cond, *, generator=None, **sampling):
        x = torch.rand(cond.shape[0], 3, 4, 4)
        x[-1] = float("nan")  # the last image of every batch is dead
        return x


def test_generation_of_non_finite_pixels_stops_before_anything_is_yielded():
    with pytest.raises(NonFiniteImagesError, match=r"non-finite pixels .* 1 of 2 images \(first: image 1\)"):
        list(iter_generate(_NaNModel(), torch.ones(2, 3), [0, 1], seed=0, batch_size=2))


def test_a_diverged_checkpoint_is_refused_naming_a_healthy_one_beside_it(tmp_path):
    from t2ilab.models.checkpoint import refuse_dead_model

    net = torch.nn.Linear(2, 2)
    healthy = tmp_path / "step=0000002.ckpt"
    torch.save({"state_dict": net.state_dict()}, healthy)
    refuse_dead_model(healthy, net)  # finite: accepted
    with torch.no_grad():
        net.weight[0, 0] = float("nan")
    dead = tmp_path / "last.ckpt"
    torch.save({"state_dict": net.state_dict()}, dead)
    with pytest.raises(ValueError, match=rf"ckpt_path={dead} is a diverged model \(non-finite values in weight\).*"
                                         rf"ckpt_path={healthy}"):
        refuse_dead_model(dead, net)


@pytest.mark.slow  # sample + eval subprocesses (~25 s on 2 cores); the refusal itself is tested above
def test_sample_and_eval_refuse_a_diverged_checkpoint_and_name_a_healthy_one(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path / "run")
    healthy = run_dir / "checkpoints" / "step=0000002.ckpt"
    assert healthy.is_file()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    ckpt["state_dict"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                          for k, v in ckpt["state_dict"].items()}
    dead = run_dir / "checkpoints" / "dead.ckpt"
    torch.save(ckpt, dead)
    out_dir = tmp_path / "samples"
    r = run("sample", f"ckpt_path={dead}", "prompts=[a red circle]", f"out_dir={out_dir}",
            f"paths.cache_dir={tmp_path / 'cache'}", check=False, timeout=300)
    assert r.returncode == 2, (r.stdout + r.stderr)[-3000:]
    assert "is a diverged model (non-finite values in" in r.stderr
    assert f"use a healthy checkpoint of the same run: ckpt_path={run_dir / 'checkpoints'}" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert not out_dir.exists() or not list(out_dir.glob("*.png"))  # no black PNGs
    r = run("eval", f"ckpt_path={dead}", "metrics.num_samples=8", f"paths.cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={tmp_path / 'eval'}", check=False, timeout=300)
    assert r.returncode == 2 and "is a diverged model" in r.stderr
    assert not (tmp_path / "eval" / "metrics.json").exists() and not (tmp_path / "eval" / "COMPLETE").exists()
