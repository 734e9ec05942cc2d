"""``python -m t2ilab.report``: a real 2 lr x 2 seed sweep (one ``-m`` multirun, built once) ->
groups keyed by lr with n=2, the table's mean ± std equal to statistics of the runs' own W&B values
(read independently), a self-contained HTML page, --by / --metric, bad input; plus pure-function
tests of grouping/aggregation and of the metrics.json / metrics.csv fallbacks on synthetic run dirs."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from t2ilab.cli.report import main
from t2ilab.reporting.html import band
from t2ilab.reporting.runs import Run, load_run
from t2ilab.reporting.table import UNSET, aggregate, differing_keys, fmt_stat, group_runs
from t2ilab.tracking.run_status import mark
from t2ilab.compat.wandb import read_offline_run

TINY = ["debug=fast", "model.net.base_channels=16", "model.net.channel_mult=[1,2]", "model.net.num_res_blocks=1",
        "model.sampling.num_steps=3", "data.num_train=256", "data.num_val=64"]
LRS = (0.001, 0.0002)


def _env() -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    # a multirun evaluates each job's final model (eval_after=auto); a small N keeps it quick
    r = subprocess.run([sys.executable, "-m", "t2ilab.train", "-m", *TINY, "seed=1,2", "metrics.num_samples=32",
                        f"model.optimizer.lr={LRS[0]},{LRS[1]}", f"hydra.sweep.dir={root / 'sweep'}",
                        f"paths.cache_dir={root / 'cache'}"], capture_output=True, text=True, timeout=600, env=_env())
    assert r.returncode == 0, r.stderr[-4000:]
    return root / "sweep"


def run_dirs(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.glob("*/manifest.json"))


def own_values(sweep: Path) -> dict[float, dict[str, list[float]]]:
    """lr -> metric -> final values, read straight from each run's manifest and offline W&B log."""
    out: dict[float, dict[str, list[float]]] = {}
    for d in run_dirs(sweep):
        lr = json.loads((d / "manifest.json").read_text())["config"]["model"]["optimizer"]["lr"]
        summary = read_offline_run(d)["summary"]
        for m in ("train/loss", "val/loss"):
            out.setdefault(lr, {}).setdefault(m, []).append(summary[m])
    return out


def table_rows(md: str) -> list[list[str]]:
    """Cells of the first Markdown table (header first)."""
    block = md.split("\n\n")[2]
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines() if "---" not in line]


def report(*argv: str, capsys) -> tuple[int, str, str]:
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_sweep_runs_summarise_themselves_in_wandb(sweep):
    """Read back from each offline run: its name and group, its job type, and every metric defined against
    trainer/global_step with its best-value summary (losses: min), so W&B's runs table sorts by the best value;
    what W&B writes (artifact staging, caches) stays inside the run dir."""
    for num, d in enumerate(run_dirs(sweep)):
        logged = read_offline_run(d)
        assert logged["name"] == f"{sweep.name}/{d.name}" and logged["group"] == sweep.name
        assert logged["job_type"] == "train" and logged["config"]["code_version"] is not None
        for key in ("train/loss", "val/loss"):
            assert logged["metrics"][key] == {"step_metric": "trainer/global_step", "summary": ["min"]}, key
        assert not logged["metrics"].get("trainer/global_step", {}).get("summary")


def test_groups_by_lr_and_aggregates_seeds(sweep, capsys):
    assert len(run_dirs(sweep)) == 4
    # logger=wandb (the default) keeps a plain CSV beside W&B: the table's numbers come from it, and they agree
    # with W&B's own summary (own_values below)
    assert all((d / "csv" / "version_0" / "metrics.csv").is_file() for d in run_dirs(sweep))
    rc, out, err = report(str(sweep), "--metric", "train/loss", "--metric", "val/loss", capsys=capsys)
    assert rc == 0, err
    rows = table_rows(out)
    assert rows[0] == ["model.optimizer.lr", "n", "train/loss", "val/loss"]  # seed never a group key
    expected = own_values(sweep)
    assert {float(r[0]) for r in rows[1:]} == set(LRS) and len(rows) == 3
    for lr_cell, n, *cells in rows[1:]:
        vals = expected[float(lr_cell)]
        assert n == "2"
        for m, cell in zip(("train/loss", "val/loss"), cells):
            assert cell == f"{statistics.fmean(vals[m]):.4g} ± {statistics.stdev(vals[m]):.4g}", (m, cell)
    assert (sweep / "report.md").read_text() == out.rstrip("\n") + "\n"  # default --out: the one PATH
    data = json.loads((sweep / "report.json").read_text())
    for g in data["groups"]:
        vals = expected[g["values"]["model.optimizer.lr"]]
        assert sorted(r["seed"] for r in g["runs"]) == [1, 2]
        for m in ("train/loss", "val/loss"):
            assert math.isclose(g["metrics"][m]["mean"], statistics.fmean(vals[m]), rel_tol=1e-12)
            assert math.isclose(g["metrics"][m]["std"], statistics.stdev(vals[m]), rel_tol=1e-12)


def test_a_grid_sweep_ends_in_quality_numbers_ranked_best_first(sweep, tmp_path, capsys):
    """eval_after=auto: every job of the multirun evaluated its final model (fixed prompts and noise), so the
    report ranks the lr groups by classifier FD, with prompt accuracy beside it and the counts apart."""
    for d in run_dirs(sweep):
        (result,) = sorted(d.glob("eval/step_*/metrics.json"))
        values = json.loads(result.read_text())
        assert math.isfinite(values["classifier_fd"]) and 0 <= values["prompt_accuracy"] <= 1
        assert "fid" in values["skipped"]  # no Inception weights offline: skipped and said why, not an error
    rc, out, err = report(str(sweep), "--out", str(tmp_path), capsys=capsys)
    assert rc == 0, err
    rows = table_rows(out)
    assert rows[0] == ["model.optimizer.lr", "n", "eval/classifier_fd", "eval/prompt_accuracy", "train/loss",
                       "val/loss"]
    assert "Ranked by `eval/classifier_fd` (lower is better), best first." in out
    means = [float(r[2].split(" ± ")[0]) for r in rows[1:]]
    assert means == sorted(means) and len(means) == 2
    assert "eval/prompt_accuracy_n" in out.split("## Diagnostics", 1)[1]
    # per-class truth: its own table (worst class first), the classes each run prompted, in W&B as well
    per_class = table_rows(out.split("## Per-class prompt accuracy", 1)[1].split("## Diagnostics", 1)[0])
    prompted = sorted({k.split("/", 1)[1] for d in run_dirs(sweep) for k in json.loads(
        next(d.glob("eval/step_*/metrics.json")).read_text()) if k.startswith("class_accuracy/")})
    assert len(prompted) >= 2 and per_class[0][:3] == ["model.optimizer.lr", "n", "worst class"]
    assert sorted(per_class[0][3:]) == prompted and len(per_class) == 3
    first = run_dirs(sweep)[0]
    logged = read_offline_run(first)
    for name in {k.split("/", 1)[1] for k in json.loads(next(first.glob("eval/step_*/metrics.json")).read_text())
                 if k.startswith("class_accuracy/")}:
        assert 0 <= logged["summary"][f"eval/class_accuracy/{name}"] <= 1
        assert logged["metrics"][f"eval/class_accuracy/{name}"]["summary"] == ["max"]
    assert logged["summary"]["eval/confusion_table/_type"] == "table-file"  # W&B's confusion-matrix chart


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)]


def test_html_is_self_contained_with_curves_and_one_grid_per_group(sweep, tmp_path, capsys):
    rc, _, err = report(str(sweep), "--out", str(tmp_path), capsys=capsys)
    assert rc == 0, err
    page = (tmp_path / "report.html").read_text()
    assert not re.search(r"(src|href)\s*=\s*['\"]?\s*(https?:)?//", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    images = _images(page)
    assert len(images) == 2 + 2  # train/loss + val/loss curves, one grid per lr group
    for data in images:
        assert Image.open(io.BytesIO(data)).format == "PNG"
    curve = Image.open(io.BytesIO(images[0])).convert("L")
    assert curve.getextrema()[0] < 100  # drawn lines/text, not a blank canvas
    best = json.loads((tmp_path / "report.json").read_text())["groups"][0]  # groups ranked: best first
    first = Path(best["runs"][0]["path"])
    assert images[2] == (first / "samples" / "grid_step0000004.png").read_bytes()


def test_by_and_metric_change_the_output(sweep, tmp_path, capsys):
    rc, out, err = report(str(sweep), "--by", "data.num_train", "--metric", "val/loss", "--out", str(tmp_path),
                          capsys=capsys)
    assert rc == 0, err
    rows = table_rows(out)
    assert rows[0] == ["data.num_train", "n", "val/loss"]
    vals = [v for per_lr in own_values(sweep).values() for v in per_lr["val/loss"]]
    assert rows[1:] == [["256", "4", f"{statistics.fmean(vals):.4g} ± {statistics.stdev(vals):.4g}"]]
    assert len(_images((tmp_path / "report.html").read_text())) == 1 + 1  # one curve, one group

    rc, _, err = report(str(sweep), "--by", "seed", "--out", str(tmp_path), capsys=capsys)
    assert rc == 2 and "seed" in err and "aggregated" in err
    rc, _, err = report(str(sweep), "--by", "model.optimiser.lr", "--out", str(tmp_path), capsys=capsys)
    assert rc == 2 and "model.optimiser.lr" in err and "did you mean model.optimizer.lr" in err
    rc, _, err = report(str(sweep), "--metric", "fid", "--out", str(tmp_path), capsys=capsys)
    assert rc == 2 and "fid" in err and "val/loss" in err  # names the available ones


def _copy_run(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints")))


def test_failed_runs_are_left_out_with_a_warning(sweep, tmp_path, capsys):
    failed = _copy_run(run_dirs(sweep)[0], tmp_path / "extra" / "failed_run")
    mark(failed, "FAILED", "NonFiniteLossError: loss is nan at global step 3", 3)
    rc, out, err = report(str(sweep), str(tmp_path / "extra"), "--out", str(tmp_path), capsys=capsys)
    assert rc == 0, err
    assert f"{failed}: FAILED (NonFiniteLossError: loss is nan at global step 3)" in err
    # the copy's values did not join a group's statistics, but its group says it lost a run
    assert sorted(r[1] for r in table_rows(out)[1:]) == ["2", "2 (+1 failed)"]


def test_bad_input_names_each_path_and_why(sweep, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, out, err = report(str(empty), capsys=capsys)
    assert rc == 2 and f"{empty}: no manifest.json (not a t2ilab run dir" in err and not out
    only_failed = _copy_run(run_dirs(sweep)[1], tmp_path / "only_failed" / "r")
    mark(only_failed, "FAILED", "SIGTERM (preempted or killed by the scheduler) at global step 2", 2)
    no_metrics = _copy_run(run_dirs(sweep)[2], tmp_path / "no_metrics")
    shutil.rmtree(no_metrics / "wandb")
    shutil.rmtree(no_metrics / "csv")  # (every run keeps a CSV beside W&B)
    shutil.rmtree(no_metrics / "eval")  # (and a multirun job its final evaluation)
    running = _copy_run(run_dirs(sweep)[3], tmp_path / "running")
    (running / "COMPLETE").unlink()
    rc, _, err = report(str(tmp_path / "only_failed"), str(no_metrics), str(running), capsys=capsys)
    assert rc == 2 and "no finished runs" in err
    assert f"{only_failed}: FAILED (SIGTERM (preempted" in err
    assert f"{no_metrics}: no final metrics" in err
    assert f"{running}: not finished" in err
    assert not (tmp_path / "only_failed" / "report.md").exists()
    # a typo among good paths is an error too (through the real entry point)
    missing = tmp_path / "does_not_exist"
    r = subprocess.run([sys.executable, "-m", "t2ilab.report", str(sweep), str(missing)], capture_output=True,
                       text=True, timeout=120, env=_env())
    assert r.returncode == 2 and f"{missing}: does not exist" in r.stderr


# ---- pure functions on synthetic runs -------------------------------------------------------------

def _run(path: str, seed: int, final: dict[str, float], **config) -> Run:
    base = {"seed": seed, "data.seed": seed, "paths.run_dir": path, "trainer.default_root_dir": path,
            "callbacks.model_checkpoint.dirpath": f"{path}/checkpoints", "data.batch_size": 8}
    return Run(Path(path), {**base, **config}, seed, final)


def test_differing_keys_skip_seed_and_run_dir_values():
    runs = [_run("/r/0", 1, {"a": 1.0}, **{"model.lr": 0.1}), _run("/r/1", 2, {"a": 2.0}, **{"model.lr": 0.2}),
            _run("/r/2", 1, {"a": 3.0}, **{"model.lr": 0.1, "model.extra": [1, 2]})]
    assert differing_keys(runs) == ["model.extra", "model.lr"]  # missing counts as a value
    runs[0].config["data.seed"] = 7  # a data seed chosen independently of the run seed is an ablation
    assert "data.seed" in differing_keys(runs)


def test_a_differing_hydra_choice_replaces_the_keys_it_determines():
    runs = []
    for i, (logger, lr) in enumerate([("csv", 0.1), ("csv", 0.2), ("wandb", 0.1)]):
        sub = {"logger.csv.name": "csv"} if logger == "csv" else {"logger.wandb.project": "p"}
        if logger == "csv":
            sub["logger.csv.flush"] = i  # varies within one choice: stays a key
        r = _run(f"/r/{i}", 1, {"a": 1.0}, logger=logger, **{"model.lr": lr}, **sub)
        r.choices = {"logger": logger}
        runs.append(r)
    assert differing_keys(runs) == ["logger", "logger.csv.flush", "model.lr"]


def test_grouping_and_aggregation():
    runs = [_run("/r/0", 1, {"loss": 1.0, "fid": 10.0}, lr=0.1), _run("/r/1", 2, {"loss": 3.0}, lr=0.1),
            _run("/r/2", 1, {"loss": 5.0}, lr=0.01), _run("/r/3", 1, {"loss": 7.0})]
    groups = group_runs(runs, ["lr"], ["loss", "fid"])
    assert [g.values["lr"] for g in groups] == [0.01, 0.1, UNSET]  # numeric order, unset last
    g = groups[1]
    assert [r.seed for r in g.runs] == [1, 2] and g.stats["loss"].mean == 2.0
    assert g.stats["loss"].std == pytest.approx(math.sqrt(2))
    assert fmt_stat(g.stats["fid"], len(g.runs)) == "10 (n=1)"  # one run of two has it; no std
    assert "fid" not in groups[0].stats and fmt_stat(None, 1) == "—"
    assert math.isnan(aggregate([4.0]).std) and [x.label for x in group_runs(runs, [], ["loss"])] == ["all runs"]
    with pytest.raises(ValueError):
        aggregate([])


def test_band_is_mean_and_std_over_runs_per_step():
    a, b = _run("/r/0", 1, {"l": 0.0}), _run("/r/1", 2, {"l": 0.0})
    a.history, b.history = {"l": [(0, 1.0), (2, 3.0)]}, {"l": [(0, 3.0), (4, 5.0)]}
    steps, mean, std, n = band(group_runs([a, b], [], ["l"])[0], "l")
    assert steps == [0, 2, 4] and mean == [2.0, 3.0, 5.0] and n == [2, 1, 1]
    assert std == [pytest.approx(math.sqrt(2)), 0.0, 0.0]


def test_metrics_json_and_csv_are_read_when_there_is_no_wandb_run(tmp_path):
    d = tmp_path / "run"
    (d / "csv" / "version_0").mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"seed": 5, "config": {"seed": 5, "model": {"lr": 0.1}}}))
    mark(d, "COMPLETE", step=20)
    for step, fid in ((10, 50.0), (20, 40.0)):
        (d / "eval" / f"step_{step:08d}").mkdir(parents=True)
        (d / "eval" / f"step_{step:08d}" / "metrics.json").write_text(
            json.dumps({"fid": fid, "step": step, "meta": {"n": 4}, "skipped": {}}))
    (d / "csv" / "version_0" / "metrics.csv").write_text(
        "epoch,step,train/loss,val/loss,lr-AdamW\n0,0,2.0,,0.1\n0,9,,1.5,\n0,19,1.0,,0.1\n")
    run = load_run(d)
    assert isinstance(run, Run), run
    assert run.seed == 5 and run.config["model.lr"] == 0.1
    assert run.final == {"eval/fid": 40.0, "train/loss": 1.0, "val/loss": 1.5}  # lr-* is bookkeeping
    assert run.history["eval/fid"] == [(10.0, 50.0), (20.0, 40.0)]
    assert run.history["train/loss"] == [(0.0, 2.0), (19.0, 1.0)]


@pytest.mark.slow
def test_html_renders_in_headless_chromium(sweep, tmp_path, capsys):
    """The page as a browser shows it (no network): not a blank screenshot. Skipped without chromium."""
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
                   None)
    if browser is None:
        pytest.skip("no chromium on PATH")
    assert main([str(sweep), "--out", str(tmp_path)]) == 0
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,1600", (tmp_path / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=False)
    gray = Image.open(shot).convert("L")
    dark = sum(gray.histogram()[:128])
    assert dark > 0.005 * gray.width * gray.height  # text, table lines and curves drawn


def _synthetic_run(d: Path, task: str, seed: int, metrics: dict) -> Path:
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"seed": seed, "config": {"task_name": task, "seed": seed}}))
    (d / "metrics.json").write_text(json.dumps({**metrics, "meta": {}, "skipped": {}}))
    mark(d, "COMPLETE", step=10)
    return d


def test_a_mixed_folder_reports_one_kind_and_names_the_rest(tmp_path, capsys):
    """Train and eval runs never share a table; a dir that looks like a run but has no manifest is named."""
    root = tmp_path / "mixed"
    for seed in (1, 2):
        _synthetic_run(root / f"train{seed}", "train", seed, {"fid": 40.0 + seed})
    ev = _synthetic_run(root / "eval1", "eval", 0, {"fid": 10.0, "kid": 0.1})
    orphan = root / "refused"
    (orphan / ".hydra").mkdir(parents=True)
    mark(orphan, "FAILED", "ValueError: wrong config value(s)")
    rc, out, err = report(str(root), "--out", str(tmp_path), capsys=capsys)
    assert rc == 0, err
    assert "| 2 |" in out and "eval1" not in out.split("## Excluded")[0]  # two train runs, one group
    assert f"{ev}: an eval run (report these with --kind eval)" in err
    assert f"{orphan}: no manifest.json; FAILED before the run started (ValueError: wrong config value(s))" in err
    rc, out, err = report(str(root), "--kind", "eval", "--out", str(tmp_path), capsys=capsys)
    assert rc == 0 and "kid" in out and "train1" not in out.split("## Excluded")[0]
    rc, _, err = report(str(root), "--kind", "sample", "--out", str(tmp_path), capsys=capsys)
    assert rc == 2 and "found eval, train runs" in err


def test_groups_are_ranked_by_the_objective_rounded_and_diagnostics_kept_apart(tmp_path, capsys):
    """An lr search: the best classifier FD first, lr at 4 significant digits, counts in their own table."""
    root = tmp_path / "study"
    fds = {0.07668830376515555: (30.0, 32.0), 0.001: (10.0, 12.0), 0.3: (50.0, 54.0)}
    for i, (lr, values) in enumerate(fds.items()):
        for seed, fd in zip((1, 2), values):
            d = root / f"{i}_{seed}"
            d.mkdir(parents=True)
            (d / "manifest.json").write_text(json.dumps({"seed": seed, "config": {
                "task_name": "train", "seed": seed, "optimized_metric": "eval/classifier_fd", "model": {"lr": lr}}}))
            (d / "eval" / "step_00000010").mkdir(parents=True)
            (d / "eval" / "step_00000010" / "metrics.json").write_text(json.dumps(
                {"classifier_fd": fd, "prompt_accuracy": 0.5, "prompt_accuracy_n": 100, "meta": {}, "skipped": {}}))
            mark(d, "COMPLETE", step=10)
    rc, out, err = report(str(root), "--out", str(tmp_path), capsys=capsys)
    assert rc == 0, err
    assert "Ranked by `eval/classifier_fd` (lower is better), best first." in out
    rows = table_rows(out)
    assert rows[0] == ["model.lr", "n", "eval/classifier_fd", "eval/prompt_accuracy"]
    assert [r[0] for r in rows[1:]] == ["0.001", "0.07669", "0.3"]  # best first, rounded
    assert rows[1][2] == "11 ± 1.414"
    diagnostics = out.split("## Diagnostics", 1)[1].split("## Runs", 1)[0]
    assert "eval/prompt_accuracy_n" in diagnostics and "eval/prompt_accuracy_n" not in out.split("## Diagnostics")[0]
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["ranked_by"] == "eval/classifier_fd" and data["groups"][1]["values"]["model.lr"] == 0.07668830376515555
    html = (tmp_path / "report.html").read_text()
    assert "<details><summary>Diagnostics" in html and "Ranked by eval/classifier_fd" in html
    rc, out, _ = report(str(root), "--rank", "eval/prompt_accuracy", "--out", str(tmp_path), capsys=capsys)
    assert rc == 0 and "Ranked by `eval/prompt_accuracy` (higher is better)" in out


def test_an_optuna_study_gets_its_history_importances_slices_and_best_command(tmp_path, capsys):
    """A sweep dir with optimization_results.yaml (as our sweeper writes it): Optuna's own figures are drawn
    from it and the best trial's command line comes from that trial's manifest."""
    import yaml
    from optuna.distributions import FloatDistribution, IntDistribution, distribution_to_json

    sweep = tmp_path / "study"
    trials = []
    for job, (lr, warm) in enumerate(((1e-4, 0), (3e-4, 100), (1e-3, 500), (3e-3, 100), (2e-4, 0))):
        fd = 40 + 1e4 * abs(lr - 3e-4) + warm / 100
        overrides = [f"model.optimizer.lr={lr}", f"model.lr_warmup_steps={warm}"]
        trials.append({"number": job, "job": job, "params": {"model.optimizer.lr": lr, "model.lr_warmup_steps": warm},
                       "value": fd, "overrides": overrides})
        d = sweep / str(job)
        d.mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps({"seed": 0, "overrides": ["experiment=quickstart", *overrides],
                                                     "config": {"task_name": "train", "seed": 0, "model": {
                                                         "optimizer": {"lr": lr}, "lr_warmup_steps": warm}}}))
        (d / "metrics.json").write_text(json.dumps({"fid": fd, "meta": {}, "skipped": {}}))
        mark(d, "COMPLETE", step=10)
    trials.append({"number": 5, "job": 5, "params": {"model.optimizer.lr": 0.01, "model.lr_warmup_steps": 0},
                   "value": None, "overrides": []})  # a failed trial
    dists = {"model.optimizer.lr": distribution_to_json(FloatDistribution(1e-5, 1e-2, log=True)),
             "model.lr_warmup_steps": distribution_to_json(IntDistribution(0, 500))}
    (sweep / "optimization_results.yaml").write_text(yaml.safe_dump(
        {"name": "optuna", "direction": "minimize", "trials": trials, "distributions": dists}))
    rc, out, err = report(str(sweep), "--out", str(tmp_path), capsys=capsys)
    assert rc == 0, err
    assert "5 of 6 trials completed; best (lowest) objective: 41" in out
    assert "python -m t2ilab.train experiment=quickstart model.optimizer.lr=0.0003 model.lr_warmup_steps=100" in out
    page = (tmp_path / "report.html").read_text()
    for title in ("optimisation history", "parameter importances", "slices: objective vs each parameter"):
        assert f"alt='{title}'" in page, title
    study = page.split("<h2>Optuna study", 1)[1]
    assert len(_images(study)) == 3 and all(Image.open(io.BytesIO(b)).size[0] > 200 for b in _images(study))
