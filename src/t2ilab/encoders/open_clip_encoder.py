"""Frozen open_clip CLIP as a :class:`~t2ilab.encoders.base.TextEncoder` (lazy, cached, offline-aware)."""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Mapping, Sequence

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CustomTextCLIP, set_model_preprocess_cfg
from open_clip.transform import PreprocessCfg, merge_preprocess_dict

from t2ilab.encoders.base import warn_if_truncated
from t2ilab.encoders.cache import EmbeddingCache, file_sha256, payload_fingerprint
from t2ilab.encoders.errors import WeightsUnavailableError
from t2ilab.encoders.hub import _download_pretrained, _hf_offline  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when encoding semantics change: invalidates every cached embedding
_OPEN_CLIP_MINOR = ".".join(open_clip.__version__.split(".")[:2])
_TORCH_MINOR = ".".join(torch.__version__.split("+")[0].split(".")[:2])


def _plain(obj):
    """Hydra/OmegaConf containers -> plain dicts/lists (open_clip's dataclass configs need real dicts)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
        return [_plain(v) for v in obj]
    return obj


class OpenCLIPEncoder:
    """Frozen open_clip CLIP text/image encoder; text embeddings go through an :class:`EmbeddingCache`.

    Nothing heavy happens at construction: the model is built/downloaded on the first encode call
    that misses the cache, so runs whose captions are all cached never load it.

    Args:
        model_name: open_clip architecture name (e.g. "ViT-B-32"), or a label when ``model_cfg`` is given.
        pretrained: open_clip pretrained tag (e.g. "laion2b_s34b_b79k") or None.
        checkpoint_path: local weights file, used instead of downloading (the tag, if set, still picks preprocessing).
        random_init: use randomly initialised weights (seeded; for tests / offline quickstarts).
        seed: seed of the random init (the global RNG state is left untouched).
        model_cfg: custom open_clip model config dict (embed_dim, vision_cfg, text_cfg) instead of a named one.
        cache_dir: root of the on-disk embedding cache; None = in-memory cache only.
        device: "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ...
        batch_size: captions / images per forward pass.
        dim: expected embedding dim; validated against the model config (None = take the model's).
        name: free-form name of this encoder choice (e.g. the Hydra config name), used in logs.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = None,
        checkpoint_path: str | os.PathLike | None = None,
        random_init: bool = False,
        seed: int = 0,
        model_cfg: dict | None = None,
        cache_dir: str | os.PathLike | None = None,
        device: str = "auto",
        batch_size: int = 256,
        dim: int | None = None,
        name: str | None = None,
    ) -> None:
        self.model_name, self.name, self.seed = model_name, name or model_name, int(seed)
        self.pretrained = pretrained or None
        self.checkpoint_path = str(checkpoint_path) if checkpoint_path else None
        self.random_init, self.batch_size = bool(random_init), int(batch_size)
        self.model_cfg = _plain(model_cfg) if model_cfg is not None else None
        self.cache_dir = cache_dir
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        if self.random_init and self.checkpoint_path:
            raise ValueError("random_init=True and checkpoint_path are mutually exclusive")
        elif self.random_init and self.pretrained:
            log.warning("random_init=True: ignoring pretrained=%r for %s", self.pretrained, model_name)
            self.pretrained = None
        if not (self.random_init or self.pretrained or self.checkpoint_path):
            raise ValueError(f"{model_name}: no weights source: set pretrained, checkpoint_path or random_init=true")
        if self.model_cfg is not None and self.pretrained and not self.checkpoint_path:
            raise ValueError("a pretrained tag cannot be combined with a custom model_cfg (use checkpoint_path)")
        if self.pretrained and not open_clip.get_pretrained_cfg(model_name, self.pretrained):
            raise ValueError(f"unknown open_clip pretrained tag {self.pretrained!r} for {model_name!r}; "
                             f"known: {open_clip.list_pretrained_tags_by_model(model_name)} (local files: checkpoint_path)")
        if self.checkpoint_path and not os.path.isfile(self.checkpoint_path):
            raise WeightsUnavailableError(f"encoder.checkpoint_path={self.checkpoint_path} does not exist "
                                          f"(weights for open_clip model '{model_name}')")
        self._arch = self.model_cfg if self.model_cfg is not None else open_clip.get_model_config(model_name)
        if self._arch is None:
            raise ValueError(f"unknown open_clip model {model_name!r} (see open_clip.list_models())")
        self.dim = int(self._arch["embed_dim"])
        custom_text = bool((self.model_cfg or {}).get("custom_text")) or "hf_model_name" in self._arch.get("text_cfg", {})
        # per-token states (model.cond_type=tokens): the text transformer's width; 0 = not offered
        self.token_dim = 0 if custom_text else int(self._arch.get("text_cfg", {}).get("width", 512))
        if dim is not None and int(dim) != self.dim:
            raise ValueError(f"encoder dim={dim} but open_clip model '{model_name}' has embed_dim={self.dim}: "
                             f"fix encoder.dim or pick the matching model")
        self.model: torch.nn.Module | None = None  # built lazily by load()
        self.tokenizer, self._fingerprint, self._cache = None, None, None
        self.num_text_forward_batches = self.num_image_forward_batches = 0  # forward-pass counters

    # ------------------------------------------------------------------ identity / cache
    def _tokenizer_identity(self) -> dict:
        text_cfg = self._arch.get("text_cfg", {})
        hf_tok = text_cfg.get("hf_tokenizer_name")
        kind = f"hf:{hf_tok}" if hf_tok else ("siglip" if "siglip" in self.model_name.lower()
                                              and self.model_cfg is None else "simple")
        ident = {"kind": kind, "context_length": text_cfg.get("context_length", 77),
                 "kwargs": text_cfg.get("tokenizer_kwargs") or {}}
        if kind == "simple":
            ident["bpe_sha256"] = file_sha256(open_clip.tokenizer.default_bpe())
        return ident

    @property
    def fingerprint(self) -> str:
        """Short hex id of weights + architecture + tokenizer; computed without loading the model."""
        if self._fingerprint is None:
            if self.random_init:
                weights = {"random_init": True, "seed": self.seed, "torch": _TORCH_MINOR}
            elif self.checkpoint_path:
                weights = {"sha256": file_sha256(self.checkpoint_path, self.cache_dir), "tag": self.pretrained}
            else:
                weights = {"tag": self.pretrained, "hub": open_clip.get_pretrained_cfg(self.model_name, self.pretrained)}
            payload = {"format": FORMAT_VERSION, "open_clip": _OPEN_CLIP_MINOR, "model": self.model_name,
                       "arch": self._arch, "weights": weights, "tokenizer": self._tokenizer_identity()}
            self._fingerprint = payload_fingerprint(payload)
        return self._fingerprint

    @property
    def cache(self) -> EmbeddingCache:
        if self._cache is None:
            meta = {"name": self.name, "model_name": self.model_name, "pretrained": self.pretrained,
                    "checkpoint_path": self.checkpoint_path, "random_init": self.random_init,
                    "seed": self.seed, "dim": self.dim, "model_cfg": self.model_cfg}
            self._cache = EmbeddingCache(self.fingerprint, self.cache_dir, meta=meta)
        return self._cache

    # ------------------------------------------------------------------ model
    def _build(self, weights: str | None) -> torch.nn.Module:
        if self.model_cfg is not None:
            cfg = copy.deepcopy(self.model_cfg)
            model = (CustomTextCLIP if cfg.pop("custom_text", False) else CLIP)(**cfg)
            if weights:
                open_clip.load_checkpoint(model, weights)
            set_model_preprocess_cfg(model, merge_preprocess_dict(PreprocessCfg(), {"size": model.visual.image_size}))
            return model
        tag_cfg = open_clip.get_pretrained_cfg(self.model_name, self.pretrained) if self.pretrained else {}
        return open_clip.create_model(self.model_name, pretrained=weights, device="cpu",
                                      force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
                                      force_preprocess_cfg=merge_preprocess_dict({}, tag_cfg))

    def load(self) -> torch.nn.Module:
        """Builds / downloads the model (idempotent). Called automatically on a cache miss."""
        if self.model is not None:
            return self.model
        t0 = time.perf_counter()
        if self.random_init:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                model = self._build(None)
        else:
            weights = self.checkpoint_path or _download_pretrained(self.model_name, self.pretrained)
            try:
                model = self._build(weights)
            except Exception as e:
                raise RuntimeError(f"could not load weights {weights} into open_clip model "
                                   f"'{self.model_name}': {e}") from e
        self.model = model.to(self.device).eval().requires_grad_(False)
        tcfg, tok = self._arch.get("text_cfg", {}), open_clip.tokenizer
        if self.model_cfg is None:  # custom configs: open_clip's default BPE tokenizer (ships with the package)
            self.tokenizer = open_clip.get_tokenizer(self.model_name)
        elif tcfg.get("hf_tokenizer_name"):
            self.tokenizer = tok.HFTokenizer(tcfg["hf_tokenizer_name"], context_length=tcfg.get("context_length", 77))
        else:
            self.tokenizer = tok.SimpleTokenizer(context_length=tcfg.get("context_length", 77),
                                                 **(tcfg.get("tokenizer_kwargs") or {}))
        log.info("loaded open_clip %s (%s) on %s in %.1fs [fingerprint %s]", self.model_name,
                 "random init" if self.random_init else self.checkpoint_path or self.pretrained,
                 self.device, time.perf_counter() - t0, self.fingerprint)
        return self.model

    # ------------------------------------------------------------------ encoding
    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> torch.Tensor:
        """(N, dim) float32 CPU, L2-normalised; cached captions never touch the model."""
        if isinstance(captions, str):
            raise TypeError("encode_text expects a list of captions, not a single string")
        captions = list(captions)
        found, missing = self.cache.get_many(captions)
        if missing:
            model = self.load()
            new: dict[str, torch.Tensor] = {}
            for i in range(0, len(missing), self.batch_size):
                batch = missing[i:i + self.batch_size]
                warn_if_truncated(self.tokenizer, batch)
                feats = model.encode_text(self.tokenizer(batch).to(self.device)).float()
                self.num_text_forward_batches += 1
                if feats.shape[-1] != self.dim:
                    raise RuntimeError(f"model produced dim {feats.shape[-1]}, expected {self.dim}")
                feats = F.normalize(feats, dim=-1).cpu()
                new.update(zip(batch, feats))
            self.cache.put_many(new)
            found.update(new)
        return torch.stack([found[c] for c in captions]) if captions else torch.empty(0, self.dim)

    @torch.no_grad()
    def text_tokens(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Uncached per-token states: (B, L, token_dim) float32 CPU after the final LayerNorm (before
        the projection, as latent-diffusion models use them) and a bool mask (B, L), True from the
        start token to the end token; L = the longest caption of this batch. Causal attention makes
        every valid state independent of the padding after it."""
        if not self.token_dim:
            raise ValueError(f"encoder {self.name!r} (custom text tower) does not offer token states: "
                             "use model.cond_type=pooled")
        model = self.load()
        text = self.tokenizer(list(captions)).to(self.device)
        cast = model.transformer.get_cast_dtype()
        x = model.token_embedding(text).to(cast) + model.positional_embedding.to(cast)
        x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask)).float()
        self.num_text_forward_batches += 1
        mask = text != 0  # open_clip pads with 0 after the end token
        length = int(mask.sum(1).max()) if len(captions) else 0
        return x[:, :length].cpu(), mask[:, :length].cpu()

    def _preprocess(self, x: torch.Tensor) -> torch.Tensor:
        visual = self.model.visual
        pp = getattr(visual, "preprocess_cfg", None) or merge_preprocess_dict(PreprocessCfg(), {})
        th, tw = (visual.image_size,) * 2 if isinstance(visual.image_size, int) else visual.image_size
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h, w = x.shape[-2:]
        mode = "bilinear" if pp.get("interpolation") == "bilinear" else "bicubic"
        if pp.get("resize_mode") == "squash":
            size = (th, tw)
        else:  # open_clip default: resize the shortest side, then centre crop
            s = max(th / h, tw / w)
            size = (max(th, round(h * s)), max(tw, round(w * s)))
        if size != (h, w):
            x = F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False).clamp_(0, 1)
        top, left = (x.shape[-2] - th) // 2, (x.shape[-1] - tw) // 2
        x = x[..., top:top + th, left:left + tw]
        mean = torch.tensor(pp["mean"], device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(pp["std"], device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """images: float (N,C,H,W) in [0,1], C in {1,3}, any size -> (N, dim) float32 CPU, L2-normalised."""
        if images.dim() != 4 or images.shape[1] not in (1, 3) or not images.is_floating_point():
            raise ValueError(f"expected float images (N,C,H,W) with C in {{1,3}}, got {images.dtype} {tuple(images.shape)}")
        lo, hi = images.aminmax() if images.numel() else (0.0, 1.0)
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"images must be in [0,1] (got [{lo:.3f}, {hi:.3f}]); map [-1,1] with (x + 1) / 2")
        model = self.load()
        out = []
        for i in range(0, images.shape[0], self.batch_size):
            x = self._preprocess(images[i:i + self.batch_size].to(self.device, torch.float32))
            out.append(F.normalize(model.encode_image(x).float(), dim=-1).cpu())
            self.num_image_forward_batches += 1
        return torch.cat(out) if out else torch.empty(0, self.dim)

    def __repr__(self) -> str:
        src = "random_init" if self.random_init else self.checkpoint_path or self.pretrained
        return f"OpenCLIPEncoder(name={self.name!r}, model={self.model_name!r}, weights={src!r}, dim={self.dim})"
