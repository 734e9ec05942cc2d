"""The one base every model family derives from: conditioning, EMA, generate, divergence guard,
optimiser + warm-up, and the metadata that makes a checkpoint self-describing.

A family implements:
  * ``__init__``: build its networks, then call ``self.init_ema(module)`` with the module
    ``generate`` should use (the whole denoiser / the generator / the VAE);
  * ``training_step(batch, batch_idx)`` using ``self.prepare_cond``/``self.drop_cond`` and
    ``self.guard(loss, name)``;
  * ``_generate(net, cond, generator, **sampling) -> (N,C,H,W) in [-1,1]``; the base clamps
    and maps to [0,1], so evaluation and sampling never branch on the family.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Annotated, Any, Callable, Iterator, Sequence

import lightning as L
import torch
from omegaconf import OmegaConf
from torch import nn

from t2ilab.compat.lightning import attached_trainer
from t2ilab.choices import COND_TYPES
from t2ilab.models import options, resume, training_state
from t2ilab.models.conditioning import ConditioningMixin
from t2ilab.models.ema import EMA
from t2ilab.models.finite_guard import FiniteGuard, NonFiniteLossError  # noqa: F401  (re-exported)
from t2ilab.models.optim import LR_DECAYS, clip_directly, lr_factor
from t2ilab.models.options import EMAOptions, OptimizerOptions
from t2ilab.utils.typecheck import OneOf, Range

log = logging.getLogger(__name__)

Generator = torch.Generator | Sequence[torch.Generator] | None


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1,1] (any dtype) -> float32 in [0,1], clamped."""
    return x.float().add(1.0).div(2.0).clamp(0.0, 1.0)


class TextConditionedModule(ConditioningMixin, L.LightningModule):
    """Shared base of the GAN, VAE and diffusion families.

    Args:
        cond_dim: text-embedding size (the encoder's ``dim``; filled in by the entry point).
        image_size: side length of generated images.
        channels: image channels (1 or 3).
        cond_drop_prob: share of training captions replaced by the learned null embedding
            (classifier-free guidance / unconditional sampling).
        center_cond: subtract the training captions' mean embedding (a buffer saved in the
            checkpoint). CLIP text embeddings share a large common component; removing it makes
            the caption-specific part easier to use (measured: colour-pair cosine 0.80 -> 0.48).
        ema: ``{enabled, decay, warmup, every_n_steps}``; EMA weights are used by ``generate``.
        optimizer: a partial optimiser (``_partial_: true`` in the config), called with params.
        lr_warmup_steps: linear learning-rate warm-up length (0 = none).
        lr_decay: ``none`` (constant after warm-up) or ``cosine`` (half-cosine from the peak down to
            ``lr_min_ratio`` x peak at ``trainer.max_steps``: short runs end annealed).
        lr_min_ratio: the learning rate at the end of a ``cosine`` decay, relative to the peak.
        sampling: default keyword arguments of ``generate`` (family-specific).
        cond_type: ``pooled`` (one vector per caption) or ``tokens`` (plus per-token states for
            cross-attention; families with ``token_conditioning``). See models/conditioning.py.
        token_dim: width of the token states (the encoder's; filled in by the entry point).
        max_tokens: token states kept per caption (``tokens``; longer captions are cut, with a warning).
        cond_noise: LAFITE perturbation strength xi of the pooled condition during training (0 = off;
            language-free training on image embeddings uses 0.1-0.3).
    """

    family = "base"
    sampling_options: type | None = None  # the family's generate() options (models/options.py): keys, types, defaults
    sampling_keys: tuple[str, ...] = ()

    def __init__(self, cond_dim: int, image_size: Annotated[int, Range(ge=4)] = 32,
                 channels: Annotated[int, Range(ge=1)] = 3, cond_drop_prob: Annotated[float, Range(ge=0, lt=1)] = 0.1,
                 center_cond: bool = True, ema: Annotated[dict | None, EMAOptions] = None,
                 optimizer: Annotated[Callable | None, OptimizerOptions] = None,
                 lr_warmup_steps: Annotated[int, Range(ge=0)] = 0, sampling: dict | None = None,
                 lr_decay: Annotated[str, OneOf(LR_DECAYS)] = "none",
                 lr_min_ratio: Annotated[float, Range(ge=0, le=1)] = 0.1,
                 cond_type: Annotated[str, OneOf(COND_TYPES)] = "pooled", token_dim: int = 0,
                 max_tokens: Annotated[int, Range(ge=1)] = 32, cond_noise: Annotated[float, Range(ge=0)] = 0.0):
        super().__init__()
        self._init_conditioning(cond_dim, cond_drop_prob, center_cond, cond_type, token_dim, max_tokens, cond_noise)
        self.image_size, self.channels = int(image_size), int(channels)
        self.ema_cfg = {**options.defaults(EMAOptions), **(ema or {})}
        self.optimizer_factory, self.lr_warmup_steps = optimizer, int(lr_warmup_steps)
        if lr_decay not in LR_DECAYS:
            raise ValueError(f"model.lr_decay={lr_decay!r}: expected one of {LR_DECAYS}")
        self.lr_decay, self.lr_min_ratio = lr_decay, float(lr_min_ratio)
        # plain values: a YAML list (guidance_interval) arrives as a ListConfig, which prompts.jsonl cannot hold
        self.sampling_defaults = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                                  for k, v in dict(sampling or {}).items()}
        bad = set(self.sampling_defaults) - set(self.sampling_keys)
        if bad:
            raise ValueError(f"model.sampling has unknown keys {sorted(bad)}; {self.family} accepts "
                             f"{list(self.sampling_keys)}")
        self.ema: EMA | None = None
        self._ema_step = -1  # global step of the last EMA update (one update per step)
        self._batches_seen, self._resume_rng = 0, None  # exact resume (models/training_state.py)
        self._batch_start: tuple[int, dict, dict] | None = None  # (global step, RNG, buffers) when the batch began
        self.run_config: dict | None = None  # the composed run config; saved in every checkpoint
        self._configured_hparams: dict[int, list[dict]] = {}  # id(optimizer) -> configured hyper-parameters
        self._ckpt_config: dict | None = None  # run config stored in the checkpoint being resumed
        # fast paths (utils/fast_paths.py sets them from the ``perf`` config before fit)
        self.optimizer_impl: str = "auto"  # AdamW implementation: auto | fused | foreach | loop
        self.sync_free_guard = False  # NaN guard without a per-step host sync (checked one step late)
        self._finite_guard = FiniteGuard()

    # -- conditioning -------------------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    # -- noise --------------------------------------------------------------------------------
    def randn(self, shape: Sequence[int], generator: Generator = None) -> torch.Tensor:
        """Gaussian noise on the model's device. ``generator`` may be one generator or one per
        sample (then sample i depends only on generator i: batching never changes an image)."""
        if generator is None or isinstance(generator, torch.Generator):
            dev = generator.device if generator is not None else self.device
            return torch.randn(tuple(shape), generator=generator, device=dev).to(self.device)
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for {shape[0]} samples")
        return torch.stack([torch.randn(tuple(shape[1:]), generator=g, device=g.device).to(self.device)
                            for g in generator])

    # -- EMA ----------------------------------------------------------------------------------
    def init_ema(self, module: nn.Module) -> None:
        self._ema_source = module
        if self.ema_cfg["enabled"]:
            self.ema = EMA(module, decay=float(self.ema_cfg["decay"]), warmup=bool(self.ema_cfg["warmup"]))

    @property
    def sampling_net(self) -> nn.Module:
        """The network ``generate`` uses: the EMA copy when EMA is enabled."""
        return self.ema.module if self.ema is not None else self._ema_source

    def update_ema(self) -> None:
        """Fold the current weights into the EMA (every ``ema.every_n_steps`` optimiser steps).

        Runs right after the optimiser step (``optimizer_step`` below), i.e. before any
        checkpoint callback of the same batch: a checkpoint never lags its EMA by one update.
        Manual-optimisation families call it after their generator step."""
        if self.ema is None or self._ema_step == self.global_step:
            return
        self._ema_step = self.global_step
        if self.global_step % int(self.ema_cfg["every_n_steps"]) == 0:
            self.ema.update_parameters(self._ema_source)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.update_ema()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self.automatic_optimization:  # safety net for families that forgot update_ema()
            self.update_ema()

    # -- generate -----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, cond: torch.Tensor, *, generator: Generator = None, **sampling: Any) -> torch.Tensor:
        """Images (N,C,H,W) in [0,1] for text embeddings ``cond`` (N, cond_dim), EMA weights."""
        bad = set(sampling) - set(self.sampling_keys)
        if bad:
            raise TypeError(f"{self.family}.generate got unknown options {sorted(bad)}; valid: {list(self.sampling_keys)}")
        with self.sampling_mode() as net:
            x = self._generate(net, self.prepare_cond(cond), generator, **{**self.sampling_defaults, **sampling})
        return to_unit_range(x)

    @contextmanager
    def sampling_mode(self) -> Iterator[nn.Module]:
        """The sampling (EMA) net in eval mode for the ``with`` block; its mode is restored after."""
        net = self.sampling_net
        was_training = net.training
        net.eval()
        try:
            yield net
        finally:
            net.train(was_training)

    def _generate(self, net: nn.Module, cond: torch.Tensor, generator: Generator, **sampling: Any) -> torch.Tensor:
        raise NotImplementedError

    def compile_targets(self) -> list[nn.Module]:
        """The trained networks ``perf.compile`` compiles in place (families with more override)."""
        return [self._ema_source]

    # -- divergence guard ---------------------------------------------------------------------
    def guard(self, loss: torch.Tensor, name: str = "loss") -> torch.Tensor:
        """Raise ``NonFiniteLossError`` (before backward) when ``loss`` is NaN/inf; with
        ``sync_free_guard`` one step later but without a host sync (models/finite_guard.py)."""
        return self._finite_guard.check(loss, name, self.global_step, self.sync_free_guard,
                                        attached_trainer(self))

    # -- optimisation -------------------------------------------------------------------------
    def warmup_lambda(self) -> Callable[[int], float]:
        """Learning-rate factor per optimiser step: linear warm-up, then constant or cosine decay."""
        trainer = attached_trainer(self)
        total = int(getattr(trainer, "max_steps", -1) or -1) if trainer is not None else -1
        return lr_factor(self.lr_warmup_steps, self.lr_decay, self.lr_min_ratio, total)

    def make_optimizer(self, params, factory: Callable | None = None) -> dict:
        factory = factory or self.optimizer_factory or torch.optim.AdamW
        kw = getattr(factory, "keywords", {})  # a CLI `betas=[0,0.99]` arrives as (int, float): torch refuses
        betas = {"betas": tuple(float(b) for b in kw["betas"])} if kw.get("betas") is not None else {}
        from t2ilab.utils.fast_paths import optimizer_kwargs

        opt = factory(params=params, **betas, **optimizer_kwargs(self.optimizer_impl, factory))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.warmup_lambda())
        self._configured_hparams[id(opt)] = resume.record(opt)  # re-applied after a resume restores old state
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def clip_gradients(self, optimizer: Any, gradient_clip_val: float | None = None,
                       gradient_clip_algorithm: str | None = None) -> None:
        """Lightning's clipping, except for optimisers that unscale internally (fused AdamW) under
        bf16 autocast: Lightning's AMP plugin refuses those, but bf16 has no loss scaler, so the
        gradients are already unscaled and clipping them directly is exact (fp16 keeps the refusal)."""
        trainer = attached_trainer(self)
        precision = str(getattr(trainer, "precision", "")) if trainer is not None else ""
        if gradient_clip_val and getattr(optimizer, "_step_supports_amp_scaling", False) and "bf16" in precision:
            return clip_directly(optimizer, gradient_clip_val, gradient_clip_algorithm)
        super().clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> Any:
        return self.make_optimizer([p for n, p in self.named_parameters()
                                    if p.requires_grad and not n.startswith("ema.")])

    # -- lifecycle ----------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        table = dm.embedding_table() if dm is not None and hasattr(dm, "embedding_table") else None
        if table is not None:
            self.set_cond_mean(table)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get("t2ilab") or {}
        self._ckpt_config = meta.get("config")
        self._batches_seen = int(meta.get("batches_seen", checkpoint.get("global_step", 0)))
        self._resume_rng = meta.get("rng")

    def on_train_start(self) -> None:
        """After a resume restored the optimiser state: the composed config's optimiser values
        (lr, weight decay, betas, ...) take effect, and every change is logged (models/resume.py)."""
        if self.trainer.ckpt_path:
            training_state.skip_trained_batches(self.trainer, self._batches_seen)
            resume.apply(self.trainer.optimizers, [c.scheduler for c in self.trainer.lr_scheduler_configs],
                         self._configured_hparams)
            resume.config_changes(self._ckpt_config, self.run_config)

    def fixed_noise(self, batch_idx: int):
        """Validation draws (noise, timesteps, z) from seed ``batch_idx``, leaving the training RNG untouched."""
        return training_state.fixed_rng(10_000 + batch_idx, self.device)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._resume_rng is not None:  # first batch after a resume: the RNG as it was at the save
            training_state.set_rng_state(self._resume_rng)
            self._resume_rng = None
        if self.trainer.world_size > 1:  # DDP: each rank draws its own noise/dropout, reproducibly
            training_state.seed_rank_batch((self.run_config or {}).get("seed"), self.trainer.global_rank,
                                           self._batches_seen)
        # an interrupt checkpoint taken before this batch's update (SIGTERM / preemption mid-batch) must
        # record the state *before* the batch, or the resumed run would skip its data and shift the RNG
        # (buffers too: a forward pass already moves e.g. spectral-norm power-iteration vectors)
        self._batch_start = (self.trainer.global_step, training_state.rng_state(),
                             {n: b.detach().clone() for n, b in self.named_buffers()})
        self._batches_seen += 1

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        import t2ilab

        seen, rng = self._batches_seen, training_state.rng_state()
        start = self._batch_start
        if start is not None and attached_trainer(self) is not None and self.trainer.global_step == start[0]:
            # saved mid-batch, before its update: as if saved at the end of the previous batch
            seen, rng = seen - 1, start[1]
            training_state.as_if_saved_after_previous_batch(checkpoint)
            state = checkpoint["state_dict"]
            state.update({n: b for n, b in start[2].items() if n in state})
        checkpoint["t2ilab"] = {"config": self.run_config, "family": self.family, "cond_dim": self.cond_dim,
                                "token_dim": self.token_dim,
                                "image_shape": list(self.image_shape), "version": t2ilab.__version__,
                                "batches_seen": seen, "rng": rng}
        for lg in self.loggers if attached_trainer(self) is not None else []:
            if type(lg).__name__ == "WandbLogger":  # resuming reuses this run id (no new W&B run)
                checkpoint["t2ilab"]["wandb_id"] = lg.version

    def log_scalars(self, values: dict[str, torch.Tensor], **kw: Any) -> None:
        self.log_dict({k: v.detach().float() for k, v in values.items()}, **{"on_step": True, "prog_bar": False, **kw})

