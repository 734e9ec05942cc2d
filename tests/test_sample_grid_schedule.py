"""Sample-grid schedule: one grid per crossed interval, also across a resume (no Lightning run)."""

from __future__ import annotations

from types import SimpleNamespace

from t2ilab.tracking.sample_grid import SampleGridCallback


def _steps_drawn(callback: SampleGridCallback, start: int, steps: list[int], max_steps: int = -1) -> list[int]:
    trainer = SimpleNamespace(global_step=start, max_steps=max_steps)
    drawn: list[int] = []
    callback.draw = lambda tr, module: drawn.append(tr.global_step)
    callback.on_train_start(trainer, None)
    for s in steps:
        trainer.global_step = s
        callback.on_train_batch_end(trainer, None, None, None, 0)
    return drawn


def test_grid_once_per_interval_with_jumping_steps():
    # a GAN advances global_step by 2 per batch: 999 -> 1001 crosses 1000 once
    assert _steps_drawn(SampleGridCallback(every_n_steps=1000), 0, [2, 998, 1001, 1003, 2001]) == [1001, 2001]


def test_resumed_run_does_not_redraw_the_interval_before_the_checkpoint():
    # resumed at 6000 (a grid was drawn there before the checkpoint): next grid at 8000, not at 6002
    assert _steps_drawn(SampleGridCallback(every_n_steps=2000), 6000, [6002, 7998, 8000]) == [8000]


def test_last_interval_is_left_to_the_final_samples_when_train_py_draws_them():
    # train.py turns at_train_end off when sample_after writes the final grid: the interval grid that
    # lands on max_steps would be the same images drawn twice
    cb = SampleGridCallback(every_n_steps=600, at_train_end=False)
    assert _steps_drawn(cb, 0, [600, 1200], max_steps=1200) == [600]
    assert _steps_drawn(SampleGridCallback(every_n_steps=600), 0, [600, 1200], max_steps=1200) == [600, 1200]
