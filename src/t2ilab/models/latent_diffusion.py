"""Latent diffusion (Rombach et al. 2022): the text-conditioned diffusion model of models/diffusion.py
run on the latent maps of a trained, frozen spatial autoencoder (``model=autoencoder``: a VAE with
``model.net.latent=spatial``, e.g. 4x8x8 latents for 32 px images).

Training encodes each batch to posterior means (no gradient) times ``scale_factor`` and applies the
ordinary diffusion loss; ``generate`` samples latents with the parent's sampler and decodes
them, so the ``generate`` contract (pixels in [0,1], ``image_shape``), evaluation and the sampling
CLI are those of every family. The autoencoder's sampling (EMA) weights are a frozen submodule
(``autoencoder.*`` in the state dict) and its config is written into the checkpoint's run config
(``model.autoencoder_config``), so a latent-diffusion checkpoint loads, samples and evaluates
without the autoencoder checkpoint it was trained from.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Annotated, Any

import torch
from omegaconf import OmegaConf
from torch import nn

from t2ilab.compat.lightning import attached_trainer
from t2ilab.models.diffusion import DiffusionModule
from t2ilab.models.losses import decoded_mean
from t2ilab.utils.typecheck import OneOf, Range
from t2ilab.models.vae import VAEModule

log = logging.getLogger(__name__)

OPTION = "model.autoencoder_ckpt"
HOW = ("train one with `python -m t2ilab.train experiment=fmnist_autoencoder` (or model=autoencoder on your data) "
       "and pass its <run_dir>/checkpoints/last.ckpt")


def _build_autoencoder(record: dict) -> VAEModule:
    """The autoencoder's LightningModule from its stored model config (weights not loaded)."""
    from t2ilab.utils.builders import build_model

    return build_model(OmegaConf.create(record["model"]), record["cond_dim"], record.get("token_dim", 0))


def load_autoencoder(path: Any, image_size: int, channels: int) -> tuple[VAEModule, dict]:
    """(the trained autoencoder of checkpoint ``path``, a record of its config) after checking that it
    is a spatial-latent VAE of this run's image shape; clear errors naming ``model.autoencoder_ckpt``."""
    from t2ilab.models.checkpoint import read_metadata

    if path is None or str(path).strip() in ("", "???", "null", "None"):
        raise ValueError(f"{OPTION} is required (the trained autoencoder whose latents this model diffuses): {HOW}")
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{OPTION}={path} does not exist: {HOW}")
    try:
        ckpt, meta = read_metadata(file)
    except ValueError as e:
        raise ValueError(f"{OPTION}={path}: {e}") from None
    model_cfg = (meta.get("config") or {}).get("model") or {}
    family = meta.get("family")
    if family != "vae":
        raise ValueError(f"{OPTION}={path} is a {family!r} checkpoint, not an autoencoder: latent diffusion needs a "
                         f"VAE trained with model.net.latent=spatial; {HOW}")
    if (model_cfg.get("net") or {}).get("latent", "vector") != "spatial":
        raise ValueError(f"{OPTION}={path} is a vector-latent VAE (model.net.latent=vector), which has no latent map "
                         f"to diffuse: latent diffusion needs model.net.latent=spatial; {HOW}")
    have, want = tuple(meta.get("image_shape") or ()), (int(channels), int(image_size), int(image_size))
    if have != want:
        fmt = "x".join
        raise ValueError(f"{OPTION}={path} was trained on {fmt(map(str, have))} images (channels x size x size) but "
                         f"this run's are {fmt(map(str, want))} (model.channels / model.image_size follow "
                         "data.channels / data.image_size): train the autoencoder with the same data.image_size and "
                         "data.channels as this run, or set them to the autoencoder's")
    record = {"model": model_cfg, "cond_dim": int(meta["cond_dim"]), "token_dim": int(meta.get("token_dim", 0)),
              "ckpt": str(file), "step": ckpt.get("global_step")}
    ae = _build_autoencoder(record)
    ae.load_state_dict(ckpt["state_dict"])
    return ae, record


class LatentDiffusionModule(DiffusionModule):
    """Args (plus those of ``DiffusionModule``; ``net`` is sized for the latent map):
        autoencoder_ckpt: checkpoint of a trained spatial autoencoder (``model=autoencoder``); its
            family, latent mode and image shape are checked against this run.
        scale_factor: ``auto`` (1 / std of the first training batch's latents, stored in the
            ``scale_factor`` buffer, so saved in checkpoints and never re-estimated on resume) or a
            number (latents are multiplied by it before diffusion, divided before decoding).
        autoencoder_config: internal: the autoencoder's config as JSON, written into the saved run
            config so that checkpoints rebuild the autoencoder without its file (its weights are in
            the state dict); never set it by hand.
    """

    family = "latent_diffusion"

    def __init__(self, autoencoder_ckpt: str | None = None,
                 scale_factor: Annotated[float | str, OneOf(("auto",)), Range(gt=0)] = "auto",
                 autoencoder_config: str | None = None, **kwargs: Any):
        if autoencoder_config:  # a saved checkpoint: architecture from its config, weights from its state dict
            record = json.loads(autoencoder_config)
            ae = _build_autoencoder(record)
        else:
            ae, record = load_autoencoder(autoencoder_ckpt, kwargs.get("image_size", 32), kwargs.get("channels", 3))
        auto = isinstance(scale_factor, str) and scale_factor == "auto"
        if not auto and (isinstance(scale_factor, (str, bool)) or not float(scale_factor) > 0):
            raise ValueError(f"model.scale_factor={scale_factor!r} must be auto or a positive number")
        self._latent_shape = tuple(int(d) for d in ae.latent_shape)  # read by sample_shape (sizes the UNet)
        super().__init__(**kwargs)
        self._ae, self._ae_record = ae, record  # plain attributes: only the sampling net is a submodule
        self.autoencoder = ae.sampling_net.eval().requires_grad_(False)
        self.register_buffer("scale_factor", torch.tensor(1.0 if auto else float(scale_factor)))
        self.register_buffer("scale_factor_set", torch.tensor(not auto))

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "_ae":  # a LightningModule: keep it out of this module's children / state dict
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return self._latent_shape  # type: ignore[return-value]

    def train(self, mode: bool = True) -> LatentDiffusionModule:
        super().train(mode)
        self.autoencoder.eval()  # frozen: always in inference mode
        return self

    # -- latents ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, scale: torch.Tensor | float | None = None) -> torch.Tensor:
        """Scaled latents (N, *sample_shape) of images in [-1,1] (frozen autoencoder, posterior means)."""
        z = self._ae.encode_latents(images.to(self.scale_factor.device), net=self.autoencoder).float()
        return z * (self.scale_factor if scale is None else scale)

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Images (N,C,H,W) in [-1,1] space (unclamped) from scaled latents."""
        return self._ae.decode_latents(z.float() / self.scale_factor, net=self.autoencoder)

    @torch.no_grad()
    def estimate_scale_factor(self, images: torch.Tensor) -> float:
        """1 / std of the latents of ``images`` (over every element; all DDP ranks' batches together)."""
        z = self.encode_images(images, scale=1.0).double()
        stats = torch.stack([z.sum(), z.square().sum(), torch.tensor(float(z.numel()), device=z.device,
                                                                      dtype=torch.float64)])
        if attached_trainer(self) is not None:
            stats = self.trainer.strategy.reduce(stats, reduce_op="sum")
        mean = stats[0] / stats[2]
        std = math.sqrt(max(float(stats[1] / stats[2] - mean.square()), 1e-12))
        return 1.0 / std

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        if not bool(self.scale_factor_set):  # first training batch of a fresh run (a resume loaded the buffer)
            value = self.estimate_scale_factor(batch["image"])
            self.scale_factor.fill_(value)
            self.scale_factor_set.fill_(True)
            log.info("latent scale factor (1 / std of the first batch's latents): %.5f", value)
            self.log("train/latent_scale_factor", value, on_step=True, on_epoch=False,
                     batch_size=batch["image"].shape[0])

    def _latent_batch(self, batch: dict) -> dict:
        scale = None
        if not bool(self.scale_factor_set):  # sanity-check validation before the first training batch
            scale = self.estimate_scale_factor(batch["image"])
        return {**batch, "image": self.encode_images(batch["image"], scale)}

    # -- training / sampling ------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return super().training_step(self._latent_batch(batch), batch_idx)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        return super().validation_step(self._latent_batch(batch), batch_idx)

    def _generate(self, net: nn.Module, cond: torch.Tensor, generator: Any, **sampling: Any) -> torch.Tensor:
        return self.decode_latents(super()._generate(net, cond, generator, **sampling))

    def _to_sample_space(self, images: torch.Tensor) -> torch.Tensor:  # SDEdit (DiffusionModule.edit)
        return self.encode_images(images)

    def x0_to_images(self, x0: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [-1,1] (unclamped), differentiable (x0 guidance)."""
        return decoded_mean(self._ae.recon, self.autoencoder.decode(x0.float() / self.scale_factor, None))

    def configure_optimizers(self) -> Any:
        return self.make_optimizer([p for n, p in self.named_parameters()
                                    if p.requires_grad and not n.startswith(("ema.", "autoencoder."))])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        meta = checkpoint.get("t2ilab") or {}
        config = meta.get("config")
        if isinstance(config, dict) and isinstance(config.get("model"), dict):
            config = copy.deepcopy(config)
            config["model"]["autoencoder_config"] = json.dumps(self._ae_record)
            meta["config"] = config
