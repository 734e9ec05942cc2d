"""Frozen Hugging Face ``transformers`` text encoder (BERT / sentence-transformers / T5 encoder ...) as a
:class:`~t2ilab.encoders.base.TextEncoder`: lazy, cached, offline-aware, text only (no image tower)."""

from __future__ import annotations

import inspect
import logging
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

from t2ilab.encoders.cache import EmbeddingCache, file_sha256, payload_fingerprint
from t2ilab.encoders.errors import WeightsUnavailableError
from t2ilab.encoders.hub import _hf_offline

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when encoding semantics change: invalidates every cached embedding
POOLINGS = ("mean", "cls")
_TRANSFORMERS_MINOR = ".".join(transformers.__version__.split(".")[:2])
_ENCODER_ONLY = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}
_IDENTITY_GLOBS = ("*.safetensors", "pytorch_model*.bin", "config.json", "tokenizer*", "vocab*", "merges.txt",
                   "special_tokens_map.json", "added_tokens.json", "*.model")  # top level of a model dir


def _hidden_size(config) -> int:
    return int(getattr(config, "hidden_size", None) or config.d_model)


def _is_local(path: str) -> bool:
    """A local directory (existing, absolute, ./ ../ ~ or more than one '/') rather than a hub id "org/name"."""
    return os.path.isdir(path) or path.startswith(("/", ".", "~")) or path.count("/") > 1


class HFTextEncoder:
    """Frozen ``transformers`` text encoder; sentence embeddings go through an :class:`EmbeddingCache`.

    Nothing heavy happens at construction (only config.json is read): tokenizer and weights are
    loaded on the first cache miss, so runs whose captions are all cached never load them.

    Args:
        model_name_or_path: hub id ("sentence-transformers/all-MiniLM-L6-v2") or a local model directory.
        pooling: "mean" (attention-masked mean of the last hidden states) or "cls" (first token).
        normalize: L2-normalise the pooled embeddings.
        max_length: captions are cut to this many tokens (None = the tokenizer's limit, at most 512).
        cache_dir: root of the on-disk embedding cache; None = in-memory cache only.
        device: "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ...
        batch_size: captions per forward pass.
        dim: expected embedding dim; validated against the model's hidden size (None = take the model's).
        name: free-form name of this encoder choice (e.g. the Hydra config name), used in logs.
        revision: hub branch / tag / commit (hub ids only; None = "main").
    """

    def __init__(self, model_name_or_path: str = "sentence-transformers/all-MiniLM-L6-v2",
                 pooling: str = "mean", normalize: bool = True, max_length: int | None = 256,
                 cache_dir: str | os.PathLike | None = None, device: str = "auto", batch_size: int = 256,
                 dim: int | None = None, name: str | None = None, revision: str | None = None) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"encoder.pooling={pooling!r}: expected one of {POOLINGS}")
        self.source, self.revision = str(model_name_or_path), revision or None
        self.name, self.pooling, self.normalize = name or self.source, pooling, bool(normalize)
        self.max_length = int(max_length) if max_length else None
        self.cache_dir, self.batch_size = cache_dir, int(batch_size)
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        self.local = _is_local(self.source)
        if self.local:
            self.source = os.path.abspath(os.path.expanduser(self.source))
            if not os.path.isfile(os.path.join(self.source, "config.json")):
                raise self._unavailable("no such directory" if not os.path.exists(self.source) else "no config.json")
        self.model, self.tokenizer, self._fingerprint, self._cache = None, None, None, None
        self._commit = None if self.local else self._cached_commit()
        config = self._config(local_only=dim is not None)
        hidden = _hidden_size(config) if config is not None else None
        if dim is not None and hidden is not None and int(dim) != hidden:
            raise ValueError(f"encoder.dim={dim} but {self.source} has hidden size {hidden}: fix encoder.dim")
        self.dim = self.token_dim = hidden if hidden is not None else int(dim)
        self.num_text_forward_batches = 0  # forward passes of the text model (encode_text and text_tokens)

    # ------------------------------------------------------------------ hub access
    def _unavailable(self, reason: str) -> WeightsUnavailableError:
        if self.local:
            return WeightsUnavailableError(f"encoder.model_name_or_path={self.source}: {reason} (expected a "
                                           f"transformers model directory: config.json, weights, tokenizer files)")
        return WeightsUnavailableError(
            f"Cannot load the transformers model encoder.model_name_or_path={self.source} (revision="
            f"{self.revision or 'main'}): {reason} and it is not in the local Hugging Face cache. On a machine "
            f"with internet access run `hf download {self.source} --local-dir DIR` (huggingface_hub < 1.0: "
            f"`huggingface-cli download {self.source} --local-dir DIR`), copy DIR here and pass "
            f"encoder.model_name_or_path=/path/to/DIR. On online machines it is downloaded and cached automatically.")

    def _cached_commit(self) -> str | None:
        """Commit hash of the hub model in the local HF cache (no network), else None."""
        path = try_to_load_from_cache(self.source, "config.json", revision=self.revision)
        return Path(path).parent.name if isinstance(path, str) else None

    def _probe(self) -> str:
        """ONE quick request (no retries) before any download; returns the commit hash of the revision."""
        if _hf_offline():
            raise self._unavailable("HF_HUB_OFFLINE is set")
        try:
            url = hf_hub_url(self.source, "config.json", revision=self._commit or self.revision)  # keep a known commit
            meta = get_hf_file_metadata(url, timeout=float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or 5))
        except Exception as e:
            raise self._unavailable(f"fetching from the Hugging Face hub failed ({type(e).__name__}: "
                                    f"{str(e).splitlines()[0][:200] if str(e) else ''})") from e
        return meta.commit_hash or self._commit or self.revision

    def _from_pretrained(self, cls, **kw):
        """``cls.from_pretrained`` from the local dir, else the HF cache, else (after one probe) the hub."""
        if self.local:
            return cls.from_pretrained(self.source, **kw)
        try:
            return cls.from_pretrained(self.source, revision=self._commit or self.revision, local_files_only=True, **kw)
        except OSError:
            self._commit = self._probe()
            return cls.from_pretrained(self.source, revision=self._commit, **kw)

    def _config(self, local_only: bool):
        """The model's config (cheap); None when not available locally and ``local_only``."""
        available = self.local or self._commit or not local_only
        return self._from_pretrained(transformers.AutoConfig) if available else None

    # ------------------------------------------------------------------ identity / cache
    @property
    def fingerprint(self) -> str:
        """Short hex id of weights + tokenizer + pooling; computed without loading the model (file hashes of a
        local dir, memoised in cache_dir; commit hash of a hub model, from the local HF cache when there)."""
        if self._fingerprint is None:
            if self.local:
                files = sorted({p for g in _IDENTITY_GLOBS for p in Path(self.source).glob(g) if p.is_file()})
                weights = {p.name: file_sha256(p, self.cache_dir) for p in files}
            else:
                if self._commit is None and not _hf_offline():
                    try:
                        self._commit = self._probe()
                    except WeightsUnavailableError:
                        pass  # unresolved: only loading can fail, which it then reports
                weights = {"repo": self.source, "commit": self._commit or f"unresolved:{self.revision or 'main'}"}
            payload = {"format": FORMAT_VERSION, "transformers": _TRANSFORMERS_MINOR, "weights": weights,
                       "pooling": self.pooling, "normalize": self.normalize, "max_length": self.max_length}
            self._fingerprint = payload_fingerprint(payload)
        return self._fingerprint

    @property
    def cache(self) -> EmbeddingCache:
        if self._cache is None:
            meta = {"name": self.name, "model_name_or_path": self.source, "revision": self.revision,
                    "commit": self._commit, "pooling": self.pooling, "normalize": self.normalize,
                    "max_length": self.max_length, "dim": self.dim, "transformers": transformers.__version__}
            self._cache = EmbeddingCache(self.fingerprint, self.cache_dir, meta=meta)
        return self._cache

    # ------------------------------------------------------------------ model
    def load(self) -> torch.nn.Module:
        """Loads tokenizer + model (idempotent; the encoder stack only for encoder-decoder models like T5)."""
        if self.model is not None:
            return self.model
        t0 = time.perf_counter()
        config = self._from_pretrained(transformers.AutoConfig)
        if _hidden_size(config) != self.dim:  # dim was taken on trust (config not available at construction)
            raise ValueError(f"encoder.dim={self.dim} but {self.source} has hidden size {_hidden_size(config)}")
        enc_cls = _ENCODER_ONLY.get(config.model_type) if config.is_encoder_decoder else None
        try:
            tok = self._from_pretrained(transformers.AutoTokenizer)
            model = self._from_pretrained(getattr(transformers, enc_cls) if enc_cls else transformers.AutoModel)
        except OSError as e:  # files missing in a local dir / a partial cache
            raise self._unavailable(f"{type(e).__name__}: {str(e).splitlines()[0][:300]}") from e
        if len(tok) < (getattr(config, "vocab_size", None) or 0) // 2:  # transformers 5: EMPTY one if files missing
            raise self._unavailable(f"its tokenizer has {len(tok)} tokens for a vocabulary of {config.vocab_size}")
        if config.is_encoder_decoder and not enc_cls:
            model = model.get_encoder()
        tok.padding_side = "right"  # CLS pooling reads position 0
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token or tok.unk_token
        self._args = set(inspect.signature(model.forward).parameters)
        self._max_len = self.max_length or min(int(tok.model_max_length), 512)
        self.tokenizer, self.model = tok, model.to(self.device, torch.float32).eval().requires_grad_(False)
        log.info("loaded transformers %s (%s) on %s in %.1fs [fingerprint %s]", self.source, type(model).__name__,
                 self.device, time.perf_counter() - t0, self.fingerprint)
        return self.model

    @torch.no_grad()
    def _forward(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(last_hidden_state (B, L, D) on device, float32; attention mask (B, L) bool), L = longest caption."""
        model = self.load()
        ids = self.tokenizer(captions, truncation=False, verbose=False)["input_ids"]
        if cut := [c for c, i in zip(captions, ids) if len(i) > self._max_len]:
            log.warning("%d caption(s) exceed encoder.max_length=%d tokens and are cut, e.g. %r",
                        len(cut), self._max_len, cut[0][:120])
        batch = self.tokenizer(captions, padding="longest", truncation=True, max_length=self._max_len,
                               return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items() if k in self._args}
        states = model(**batch).last_hidden_state.float()
        self.num_text_forward_batches += 1
        return states, batch["attention_mask"].bool()

    # ------------------------------------------------------------------ encoding
    def encode_text(self, captions: list[str]) -> torch.Tensor:
        """(N, dim) float32 CPU (L2-normalised when ``normalize``); cached captions never touch the model."""
        if isinstance(captions, str):
            raise TypeError("encode_text expects a list of captions, not a single string")
        captions = list(captions)
        found, missing = self.cache.get_many(captions)
        if missing:
            new: dict[str, torch.Tensor] = {}
            for i in range(0, len(missing), self.batch_size):
                batch = missing[i:i + self.batch_size]
                states, mask = self._forward(batch)
                m = mask.unsqueeze(-1).to(states.dtype)
                feats = states[:, 0] if self.pooling == "cls" else (states * m).sum(1) / m.sum(1).clamp_min(1.0)
                feats = (F.normalize(feats, dim=-1) if self.normalize else feats).cpu()
                new.update(zip(batch, feats))
            self.cache.put_many(new)
            found.update(new)
        return torch.stack([found[c] for c in captions]) if captions else torch.empty(0, self.dim)

    def text_tokens(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """UNCACHED per-token states: (tokens float32 CPU (B, L, token_dim) = last hidden state, mask bool
        CPU (B, L) = attention mask, False on padding), L = the longest caption of this call (<= max_length)."""
        if isinstance(captions, str):
            raise TypeError("text_tokens expects a list of captions, not a single string")
        if not (captions := list(captions)):
            return torch.empty(0, 0, self.token_dim), torch.empty(0, 0, dtype=torch.bool)
        self.load()
        batch = self.tokenizer(captions, padding="longest", truncation=True, max_length=self._max_len)
        width = max(len(ids) for ids in batch["input_ids"])
        chunks = [self._forward(captions[i:i + self.batch_size]) for i in range(0, len(captions), self.batch_size)]
        # each chunk is padded to its own longest caption: widen to the call's
        toks = [F.pad(s, (0, 0, 0, width - s.shape[1])).cpu() for s, _ in chunks]
        return torch.cat(toks), torch.cat([F.pad(m, (0, width - m.shape[1])).cpu() for _, m in chunks])

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Always raises: a text-only encoder has no image tower."""
        raise TypeError(f"{self!r} is a text-only encoder and cannot embed images: the CLIP score uses its own CLIP "
                        f"model (metrics.clip.*), and language-free training (data.condition_source=image_embedding)"
                        f" needs a CLIP encoder: encoder=clip_vit_b32 (or clip_vit_l14, clip_tiny)")

    def __repr__(self) -> str:
        rev = f", revision={self.revision!r}" if self.revision else ""
        return (f"HFTextEncoder(name={self.name!r}, model={self.source!r}{rev}, pooling={self.pooling!r}, "
                f"normalize={self.normalize}, dim={self.dim})")
