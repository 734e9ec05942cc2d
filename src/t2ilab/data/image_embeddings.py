"""CLIP image embeddings of a split, for language-free training (``data.condition_source=image_embedding``).

LAFITE (Zhou et al. 2022) trains text-to-image models without captions: the generator is conditioned
on the CLIP *image* embedding of each training image (perturbed with noise in training, see
models/conditioning.py ``perturb``), and at sampling time on CLIP *text* embeddings, which a
contrastively trained CLIP places near the image embeddings of matching images. This is only
meaningful with a pretrained CLIP whose image and text spaces are aligned (``encoder=clip_vit_b32``
etc.); with the random ``clip_tiny`` of the tests it exercises the plumbing only.

Embeddings are computed once per image CONTENT (key: sha1 of the uint8 pixels) through an
:class:`EmbeddingCache` of fingerprint ``<encoder fingerprint>-image``: reruns, other runs on the
same data and other splits holding the same image never recompute them.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import torch

from t2ilab.encoders.cache import EmbeddingCache

log = logging.getLogger(__name__)

_CACHES: dict[tuple, EmbeddingCache] = {}


def _cache(encoder: Any) -> EmbeddingCache:
    key = (encoder.fingerprint, str(getattr(encoder, "cache_dir", None)))
    if key not in _CACHES:
        meta = {"kind": "image_embeddings", "name": getattr(encoder, "name", None), "dim": encoder.dim}
        _CACHES[key] = EmbeddingCache(f"{encoder.fingerprint}-image", getattr(encoder, "cache_dir", None), meta=meta)
    return _CACHES[key]


def image_key(image: torch.Tensor) -> str:
    """Content key of one uint8 (C,H,W) image (shape included: a resize is another image)."""
    h = hashlib.sha1(str(tuple(image.shape)).encode())
    h.update(image.contiguous().numpy().tobytes())
    return h.hexdigest()


def embed_split(encoder: Any, dataset: Any, batch_size: int = 256) -> torch.Tensor:
    """(len(dataset), encoder.dim) float32 CPU image embeddings, one row per item, cached per image."""
    if not callable(getattr(encoder, "encode_image", None)):
        raise ValueError("data.condition_source=image_embedding needs an encoder that embeds images (a CLIP: "
                         "encoder=clip_vit_b32 / clip_vit_l14 / clip_tiny); this one is text-only")
    images = getattr(dataset, "images", None)
    get = (lambda i: images[i]) if isinstance(images, torch.Tensor) else dataset.load_image
    keys = [image_key(get(i)) for i in range(len(dataset))]
    cache = _cache(encoder)
    found, missing = cache.get_many(keys)
    if missing:
        where = {k: i for i, k in enumerate(keys)}
        log.info("embedding %d training images with %s (language-free conditioning; cached per image)",
                 len(missing), getattr(encoder, "name", type(encoder).__name__))
        for s in range(0, len(missing), batch_size):
            chunk = missing[s:s + batch_size]
            x = torch.stack([get(where[k]) for k in chunk]).float().div_(255.0)
            new = dict(zip(chunk, encoder.encode_image(x).float()))
            cache.put_many(new)
            found.update(new)
    return torch.stack([found[k] for k in keys]) if keys else torch.empty(0, encoder.dim)
