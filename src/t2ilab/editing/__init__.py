"""Text-guided editing of existing images: ``python -m t2ilab.edit`` (src/t2ilab/cli/edit.py).

One family API, ``model.edit(images01, cond, *, strength, generator=None, source_cond=None,
**sampling) -> images in [0,1]``, with one meaning of an edit for every family: **infer the noise
that makes the model draw the image under its SOURCE caption, then replay that noise under the
edited caption** (abduction -> action -> prediction). Whatever the caption does not control
(pose, stroke width, position, background) stays; what it controls changes.

* VAE (vector latent): the noise is the standardised posterior mean ``(z - mu_p(c_src)) /
  sigma_p(c_src)`` (exact, one encoder pass); spatial-latent autoencoders ignore captions and refuse.
* GAN: there is no encoder, so the noise ``z`` is *fitted* (latent optimisation, ``inversion_steps``
  Adam steps on the pixel MSE of ``G(z, c_src)``); ``inversion_mse`` says how well that worked.
* Diffusion: ``DiffusionModule.edit`` (SDEdit-style; implemented in models/diffusion.py).

``strength`` s in (0, 1] blends the conditioning: ``c = lerp(c_src, c_target, s)`` in the model's
prepared (centred) conditioning space; s = 1 is the full edit, and with the source caption as the
target an edit is a reconstruction. Without a source caption the learned null condition is the
source (what the model draws for "no caption"; for a GAN trained without caption dropout it is the
mean caption).

Modules: ``families`` (VAE/GAN edits, dispatch), ``inputs`` (reading/validating input images and
captions.jsonl), ``metrics`` (CLIP directional similarity, SSIM/PSNR, target prompt accuracy),
``writer`` (out_dir checks, files, grid, loggers).
"""
