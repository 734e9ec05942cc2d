"""CLIP guidance at sampling time (``python -m t2ilab.sample clip_guidance.scale=...``).

* :mod:`.clip_guidance`: differentiable CLIP similarity + ``ClipGuidance`` (diffusion: moves the
  sampler's predicted x0 along the CLIP gradient via ``DiffusionModule.guided_by``);
* :mod:`.latent_opt`: GAN / VAE latent optimisation toward the prompt;
* :mod:`.guided`: one wrapper that plugs either into the one generation path.

Nothing here runs unless asked for (``clip_guidance.scale`` 0 = off): training, evaluation and
unguided sampling never import it.
"""

from t2ilab.guidance.clip_guidance import ClipGuidance, build_clip, clip_image_features, clip_similarity
from t2ilab.guidance.guided import ClipGuidedModel, guided_generate, supports_guidance
from t2ilab.guidance.latent_opt import clip_optimise_latents

__all__ = ["ClipGuidance", "ClipGuidedModel", "build_clip", "clip_image_features", "clip_similarity",
           "clip_optimise_latents", "guided_generate", "supports_guidance"]
