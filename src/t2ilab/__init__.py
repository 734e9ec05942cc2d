"""t2ilab: text-conditioned image generation (GAN / VAE / diffusion on frozen CLIP text embeddings)."""

from t2ilab.utils.resolvers import register_resolvers

__version__ = "0.1.0"

register_resolvers()
