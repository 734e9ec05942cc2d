"""Every closed set of option values, in one import-light place.

The modules that implement the options and the typed config check (``utils/model_schema.py``) both read
these tuples, so a choice is written once, and checking a config needs no torch / Lightning import
(a wrong value is reported in about a second instead of after loading the model code)."""

from __future__ import annotations

COND_TYPES = ("pooled", "tokens")                                   # model.cond_type
SCHEDULES = {"cosine": "squaredcos_cap_v2", "linear": "linear"}     # model.schedule -> diffusers beta_schedule
PREDICTIONS = ("epsilon", "v_prediction")                           # model.prediction
PARAMETERIZATIONS = ("vp", "edm")                                   # diffusion model.parameterization
LOSS_WEIGHTINGS = ("none", "min_snr")                               # model.loss_weighting
SAMPLER_NAMES = ("ddim", "dpm_solver++", "euler", "ddpm")           # sampling.sampler (models/samplers.py table)
GUIDES = ("cfg", "autoguidance")                                    # diffusion sampling.guide
ADV_LOSSES = ("hinge", "ns")                                        # GAN model.adv_loss
GP_KINDS = ("none", "r1", "ma_gp")                                  # GAN model.gp
RECON_KINDS = ("mse", "bce", "gaussian", "laplace")                 # VAE model.recon
LR_DECAYS = ("none", "cosine")                                      # model.lr_decay
SCALES = ("channel", "scalar")                                      # VAE model.scale
PRIORS = ("standard", "conditional")                                # VAE model.prior
LATENT_PRIORS = ("none", "diffusion")                               # VAE model.latent_prior
LATENT_PRIOR_FRAMES = ("caption", "shared")                         # VAE model.latent_prior_frame
GENERATOR_OUTPUTS = ("clamp", "linear", "tanh")                     # GAN model.generator.output
UPSAMPLE_MODES = ("nearest", "bilinear")                            # GAN generator / VAE decoder upsample
LATENTS = ("vector", "spatial")                                     # VAE model.net.latent
