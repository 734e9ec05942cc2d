"""Post-processing of exported images (src/t2ilab/postprocess.py): each step keeps [0,1] and the
expected shape, chains run in order, bad steps fail before any work, the default ``none`` leaves
the exported files byte-identical, and the applied chain is recorded in prompts.jsonl."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from t2ilab.postprocess import Chain, build_chain, denoise, sharpen, upscale
from t2ilab.utils.config import CONF_DIR

PROMPTS = ["a red circle", "a blue square"]


def images(c: int = 3, n: int = 2, size: int = 16) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("step, kwargs, side", [
    (upscale, {"factor": 2}, 32), (upscale, {"size": 40, "mode": "bilinear"}, 40), (upscale, {"factor": 1}, 16),
    (sharpen, {"amount": 1.0}, 16), (denoise, {"method": "gaussian"}, 16), (denoise, {"method": "median"}, 16)])
def test_each_step_keeps_range_and_shape(step, kwargs, side, c):
    x = images(c)
    y = step(x, **kwargs)
    assert y.shape == (2, c, side, side) and y.dtype == torch.float32
    assert 0 <= y.min() and y.max() <= 1


def test_steps_do_what_they_say():
    flat = torch.full((1, 1, 9, 9), 0.5)
    speck = flat.clone()
    speck[0, 0, 4, 4] = 1.0
    assert torch.equal(denoise(speck, "median", 3), flat)  # an isolated speckle is removed
    assert denoise(speck, "gaussian", 3, 0.8)[0, 0, 4, 4] < 1.0
    edge = torch.zeros(1, 1, 8, 8)
    edge[..., 4:] = 0.6
    sharp = sharpen(edge, amount=1.0, sigma=1.0)
    assert sharp[0, 0, 0, 4] > 0.6 and sharp[0, 0, 0, 3] == 0  # overshoot on the bright side, clamped below
    assert torch.equal(sharpen(edge, amount=0.0), edge)
    x = images()
    torch.testing.assert_close(upscale(x, factor=2, mode="nearest"), x.repeat_interleave(2, -1).repeat_interleave(2, -2))


def test_chain_runs_in_order_and_describes_itself():
    x = images()
    up_then_sharp = Chain([{"kind": "upscale", "factor": 2}, {"kind": "sharpen", "amount": 0.8}])
    sharp_then_up = Chain([{"kind": "sharpen", "amount": 0.8}, {"kind": "upscale", "factor": 2}])
    assert torch.equal(up_then_sharp(x), sharpen(upscale(x, factor=2), amount=0.8))
    assert not torch.allclose(up_then_sharp(x), sharp_then_up(x))
    assert [s["kind"] for s in up_then_sharp.describe()] == ["upscale", "sharpen"]
    assert up_then_sharp.describe()[1] == {"kind": "sharpen", "amount": 0.8, "sigma": 1.0, "kernel_size": 5}


def test_empty_chain_is_the_identity_object():
    x = images()
    for chain in (Chain(), build_chain(None), build_chain({"steps": []}), build_chain([])):
        assert not chain and chain(x) is x


@pytest.mark.parametrize("steps, match", [
    ([{"kind": "blur"}], r"steps\[0\].kind='blur'"), ([{"factor": 2}], "must be a mapping with a 'kind'"),
    ([{"kind": "sharpen"}, {"kind": "sharpen", "radius": 2}], r"steps\[1\] \(sharpen\) has unknown options \['radius'\]"),
    ([{"kind": "denoise", "kernel_size": 4}], "odd positive integer"), ([{"kind": "denoise", "method": "nlm"}], "median"),
    ([{"kind": "upscale", "factor": 0}], "must be > 0"), ([{"kind": "upscale", "mode": "lanczos"}], "mode=")])
def test_bad_steps_are_clear_errors(steps, match):
    with pytest.raises(ValueError, match=match):
        Chain(steps)


def test_sr_model_hook(tmp_path):
    net = torch.nn.Upsample(scale_factor=3.0, mode="nearest")
    program = torch.export.export(net, (images(),), dynamic_shapes={"input": {0: torch.export.Dim("n")}})
    torch.export.save(program, tmp_path / "sr.pt2")
    y = Chain([{"kind": "upscale", "model": str(tmp_path / "sr.pt2")}])(images(n=5))
    assert y.shape == (5, 3, 48, 48)
    torch.testing.assert_close(y, net(images(n=5)))
    with pytest.raises(FileNotFoundError, match="super-resolution"):
        upscale(images(), model=str(tmp_path / "missing.pt"))


@pytest.mark.parametrize("preset", ["none", "sharpen", "upscale", "denoise"])
def test_presets_compose_in_the_sample_config(preset):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("sample", overrides=["ckpt_path=x", f"postprocess={preset}"])
    chain = build_chain(cfg.postprocess)
    assert bool(chain) == (preset != "none")
    assert cfg.clip_guidance.scale == 0  # guidance is off by default
    y = chain(images())
    assert 0 <= y.min() and y.max() <= 1


def tiny_gan():
    from t2ilab.utils.builders import build_model

    cfg = OmegaConf.merge(OmegaConf.load(CONF_DIR / "model" / "gan.yaml"),
                          {"z_dim": 8, "generator": {"base_channels": 8, "max_channels": 16, "emb_dim": 16},
                           "discriminator": {"base_channels": 8, "max_channels": 16}, "image_size": 16, "channels": 3})
    torch.manual_seed(0)
    return build_model(cfg, 16).eval()


def test_export_none_is_byte_identical_and_chains_are_recorded(tmp_path):
    from t2ilab.models.generation import write_samples

    model, cond = tiny_gan(), torch.randn(2, 16, generator=torch.Generator().manual_seed(1))

    def export(name, post):
        out = write_samples(model, cond, PROMPTS, tmp_path / name, num_per_prompt=2, seed=1, postprocess=post)
        files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
        grid = (tmp_path / f"{name}_grid.png").read_bytes()
        return files, grid, [json.loads(line) for line in files["prompts.jsonl"].decode().splitlines()]

    plain, plain_grid, rows = export("plain", None)
    none, none_grid, _ = export("none", OmegaConf.create({"steps": []}))
    assert none == plain and none_grid == plain_grid and "postprocess" not in rows[0]["sampling"]
    up, up_grid, rows = export("up", {"steps": [{"kind": "upscale", "factor": 2}]})
    assert rows[0]["sampling"]["postprocess"][0]["kind"] == "upscale" and rows[0]["sampling"]["truncation"] is None
    from PIL import Image

    assert Image.open(tmp_path / "up" / "000000.png").size == (32, 32)
    assert Image.open(tmp_path / "plain" / "000000.png").size == (16, 16)
    assert up_grid != plain_grid
