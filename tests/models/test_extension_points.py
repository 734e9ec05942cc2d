"""docs/design.md "Where to add things", done once for trivial cases: a new family needs only its module
(conditioning, EMA, generate, the writer and a real Lightning fit come from the shared base), and a new
sampler is one row in the sampler table."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from t2ilab.models.base import TextConditionedModule
from t2ilab.models.generation import write_samples


class MeanColour(TextConditionedModule):
    """The smallest family: one colour per caption, from a linear map of its (centred) embedding."""

    family = "mean_colour"
    sampling_keys = ("brightness",)

    def __init__(self, cond_dim: int, **kwargs):
        super().__init__(cond_dim, **kwargs)
        self.net = nn.Linear(cond_dim, self.channels)
        self.init_ema(self.net)

    def training_step(self, batch, batch_idx):
        colour = self.net(self.prepare_cond(batch["cond"]))  # (N, C) in [-1, 1] pixel units
        loss = (colour[:, :, None, None] - batch["image"]).pow(2).mean()
        self.log("train/loss", loss)
        return self.guard(loss)

    def _generate(self, net, cond, generator, brightness: float = 0.0):
        colour = net(cond).clamp(-1, 1) + brightness
        return colour[:, :, None, None].expand(-1, -1, self.image_size, self.image_size)


def test_a_new_family_trains_generates_and_writes_through_the_shared_base(tmp_path):
    torch.manual_seed(0)
    model = MeanColour(8, image_size=4, channels=3, optimizer=lambda params: torch.optim.SGD(params, lr=0.5),
                       ema={"enabled": True, "decay": 0.5})
    red = torch.tensor([1.0, -1.0, -1.0])[None, :, None, None].expand(4, 3, 4, 4)
    batches = [{"image": red, "cond": torch.eye(8)[:4], "caption": ["red"] * 4}] * 30
    L.Trainer(max_steps=30, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(model, torch.utils.data.DataLoader(batches, batch_size=None))
    images = model.generate(torch.eye(8)[:2])  # EMA weights, [0, 1]
    assert images.shape == (2, 3, 4, 4) and images.min() >= 0 and images.max() <= 1
    assert images[:, 0].mean() > 0.8 and images[:, 1:].mean() < 0.2  # it learned "red"
    assert model.generate(torch.eye(8)[:1], brightness=-2.0).max() == 0  # its own sampling option
    out = write_samples(model, torch.eye(8)[:2], ["a", "b"], tmp_path / "s", num_per_prompt=2, seed=0)
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png", "000002.png", "000003.png",
                                                     "prompts.jsonl"]


def test_a_new_sampler_is_one_row_in_the_table(make_model, monkeypatch):
    from diffusers import DDIMScheduler

    from t2ilab.models import samplers

    def ddim_leading(config, eta, clip_x0):
        return DDIMScheduler.from_config(config, timestep_spacing="leading", clip_sample=bool(clip_x0))

    monkeypatch.setitem(samplers.SAMPLERS, "ddim_leading", samplers.Sampler(ddim_leading, clips_x0=True))
    model = make_model("diffusion", image_size=8).eval()
    cond = torch.nn.functional.normalize(torch.randn(2, 16), dim=1)
    out = model.generate(cond, generator=[torch.Generator().manual_seed(i) for i in range(2)],
                         sampler="ddim_leading", num_steps=3)
    assert out.shape == (2, 3, 8, 8) and torch.isfinite(out).all()
