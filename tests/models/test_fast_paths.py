"""Fast paths (utils/fast_paths.py): resolution per device with recorded fallbacks, the sync-free
EMA and guard, on-device tensor batches equal to the standard collate, the fast-path switches
leave training numerically equivalent, and a training step makes no host sync in our code."""

from __future__ import annotations

import copy

import pytest
import torch

from t2ilab.models.base import NonFiniteLossError
from t2ilab.models.ema import EMA, ema_decay
from t2ilab.utils import fast_paths


def test_auto_resolves_per_device_and_unknown_options_fail():
    cpu, notes = fast_paths.resolve({}, torch.device("cpu"))
    assert cpu["optimizer_impl"] == "fused" and cpu["compile"] is False and cpu["data_on_device"] is True
    assert notes == []
    cuda, _ = fast_paths.resolve({"compile": False}, torch.device("cuda"))
    assert cuda["optimizer_impl"] == "fused" and cuda["channels_last"] is True and cuda["compile"] is False
    with pytest.raises(ValueError, match="unknown perf option.*compiel"):
        fast_paths.resolve({"compiel": True}, torch.device("cpu"))
    with pytest.raises(ValueError, match="optimizer_impl='fast'"):
        fast_paths.resolve({"optimizer_impl": "fast"}, torch.device("cpu"))


def test_compile_without_a_compiler_falls_back_with_the_reason(monkeypatch):
    monkeypatch.setattr(fast_paths.shutil, "which", lambda name: None)
    choices, notes = fast_paths.resolve({"compile": True}, torch.device("cpu"))
    assert choices["compile"] is False
    assert len(notes) == 1 and "no C++ compiler" in notes[0] and "eager" in notes[0]


@pytest.mark.parametrize(("flags", "expected"), [({"avx512f", "avx512_bf16"}, "bf16-mixed"),
                                                ({"amx_bf16", "amx_tile"}, "bf16-mixed"),
                                                ({"avx2", "avx512f"}, "32-true"), (set(), "32-true")])
def test_precision_auto_follows_native_bf16_on_cpu(monkeypatch, flags, expected):
    monkeypatch.setattr(fast_paths, "cpu_flags", lambda: set(flags))
    precision, note = fast_paths.resolve_precision("auto", torch.device("cpu"))
    assert precision == expected
    assert (note is None) == (expected == "bf16-mixed")
    if note:
        assert "avx512_bf16" in note and "32-true" in note
    # an explicit value is never changed, whatever the CPU
    assert fast_paths.resolve_precision("bf16-mixed", torch.device("cpu")) == ("bf16-mixed", None)
    assert fast_paths.resolve_precision("32-true", torch.device("cpu")) == ("32-true", None)


def test_train_hands_lightning_the_resolved_precision(monkeypatch, make_model):
    """train.py resolves trainer.precision=auto with the perf options, and Lightning accepts the result."""
    from omegaconf import OmegaConf

    from t2ilab.cli import train
    from t2ilab.compat.hydra import instantiate

    cfg = OmegaConf.create({"perf": {}, "trainer": {"_target_": "lightning.pytorch.trainer.Trainer",
                                                    "accelerator": "cpu", "precision": "auto"}})
    for flags, expected in (({"avx512_bf16"}, "bf16-mixed"), ({"avx2"}, "32-true")):
        monkeypatch.setattr(fast_paths, "cpu_flags", lambda flags=flags: set(flags))
        choices, notes = train._fast_paths(cfg, make_model("diffusion"), None)
        assert choices["precision"] == expected and bool(notes) == (expected == "32-true")
        trainer = instantiate(cfg.trainer, precision=choices["precision"], logger=False,
                              enable_checkpointing=False, enable_progress_bar=False)
        assert trainer.precision == expected


def test_cpu_flags_reads_this_machines_cpuinfo():
    flags = fast_paths.cpu_flags()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            has_flags = any(line.startswith("flags") for line in f)
    except OSError:
        has_flags = False
    assert bool(flags) == has_flags
    if has_flags:
        assert "fpu" in flags or "sse2" in flags


def test_optimizer_impl_reaches_adamw(make_model):
    for impl, key, value in (("fused", "fused", True), ("foreach", "foreach", True), ("loop", "foreach", False)):
        model = make_model("diffusion")
        model.optimizer_impl = impl
        opt = model.configure_optimizers()["optimizer"]
        assert opt.defaults[key] is value, impl


def _reference_ema(ema_params, params, count, decay):
    d = ema_decay(decay, True, count)
    return [e * d + p * (1 - d) for e, p in zip(ema_params, params)]


@pytest.mark.parametrize("foreach", [True, False])
def test_ema_matches_the_warmup_formula_and_resumes_its_count(make_model, foreach):
    model = make_model("diffusion")
    ema = EMA(model.net, decay=0.99, foreach=foreach)
    expect = [p.detach().clone() for p in ema.module.parameters()]
    for step in range(4):
        with torch.no_grad():
            for p in model.net.parameters():
                p.add_(0.1 * (step + 1))
        expect = _reference_ema(expect, [p.detach() for p in model.net.parameters()], step, 0.99)
        ema.update_parameters(model.net)
    for e, x in zip(ema.module.parameters(), expect):
        torch.testing.assert_close(e, x)
    restored = EMA(copy.deepcopy(model.net), decay=0.99, foreach=foreach)
    restored.update_parameters(model.net)  # count 0 -> 1 before the load: the load must reset it
    restored.load_state_dict(ema.state_dict())
    ema.update_parameters(model.net)
    restored.update_parameters(model.net)  # decay of count 4 (from the loaded n_averaged), not of count 1
    for a, b in zip(ema.module.parameters(), restored.module.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert int(restored.n_averaged) == 5


def test_tensor_batches_equal_the_standard_collate():
    from t2ilab.data.shapes import ShapesDataModule

    class Enc:
        dim = 4

        def encode_text(self, captions):
            return torch.stack([torch.tensor([len(c), c.count("a"), c.count("e"), 1.0]) for c in captions])

    dm = ShapesDataModule(num_train=64, num_val=8, num_test=8, text_encoder=Enc(), batch_size=16, seed=3)
    dm.shuffle_seed = 7
    dm.setup("fit")
    plain = list(dm.train_dataloader())
    dm.batches_on = torch.device("cpu")
    fast = list(dm.train_dataloader())
    assert len(plain) == len(fast) == 4
    for a, b in zip(plain, fast):
        assert a["caption"] == b["caption"]
        for key in ("image", "cond", "index", "label"):
            assert torch.equal(a[key], b[key]), key


def test_sync_free_guard_stops_one_step_late_with_its_reason(make_model, fake_batch):
    model = make_model("diffusion")
    model.sync_free_guard = True
    model.guard(torch.tensor(1.0))
    model.guard(torch.tensor(float("nan")))  # not read yet: no sync on this step
    with pytest.raises(NonFiniteLossError, match="detected one step later"):
        model.guard(torch.tensor(1.0))


class _SyncCounter:
    """Counts host reads of tensor values made directly by t2ilab code (Tensor.item / __bool__ /
    tolist / cpu / numpy / __float__ / __int__) while ``active``; library internals (e.g. AdamW's
    CPU step counter) are not ours to change. Tensors marked ``t2ilab_host_copy`` are host copies
    read by design (the sync-free guard's flag, copied without blocking a step earlier)."""

    NAMES = ("item", "__bool__", "tolist", "cpu", "numpy", "__float__", "__int__")

    def __init__(self, monkeypatch):
        import traceback

        self.active, self.calls = False, []
        for name in self.NAMES:
            orig = getattr(torch.Tensor, name)

            def wrapped(t, *a, _orig=orig, _name=name, **kw):
                if self.active and not getattr(t, "t2ilab_host_copy", False):
                    caller = traceback.extract_stack()[-2]
                    if "/t2ilab/" in caller.filename:
                        self.calls.append(f"{_name} at {caller.filename}:{caller.lineno}")
                return _orig(t, *a, **kw)

            monkeypatch.setattr(torch.Tensor, name, wrapped)


@pytest.mark.parametrize("family", ["diffusion", "gan", "vae"])
def test_training_steps_make_no_host_sync_in_t2ilab_code(make_model, fake_batch, fit, monkeypatch, family):
    import lightning as L

    model = make_model(family)
    choices, _ = fast_paths.resolve({"sync_free_guard": True}, torch.device("cpu"))
    fast_paths.apply(model, None, choices, torch.device("cpu"))
    counter = _SyncCounter(monkeypatch)

    class Window(L.Callback):  # count during batches 2..5 (after setup / first-step work)
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            counter.active = batch_idx >= 2

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            counter.active = False

    trainer = fit(model, [fake_batch(seed=i) for i in range(6)], callbacks=[Window()], log_every_n_steps=1000)
    assert trainer.global_step >= 6
    assert counter.calls == [], counter.calls
