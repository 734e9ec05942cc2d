"""Instantiate the run's parts from config nodes (shared by train, sample and eval)."""

from __future__ import annotations

from typing import Any

from t2ilab.compat.hydra import instantiate
from omegaconf import DictConfig


def build_encoder(cfg_encoder: DictConfig, run_cfg: DictConfig | None = None) -> Any:
    """The frozen text encoder (lazy: no weights are loaded until the first encode).

    With ``run_cfg`` (the composed training config: the run's, or the one stored in a checkpoint)
    the encoder is wrapped the way the run conditions: ``model.cond_type=tokens`` packs per-token
    states (encoders/tokens.py), ``prompt_expansion`` rewrites captions before encoding
    (encoders/prompt_expansion.py). Train, sample and eval all build it here, so a prompt is
    conditioned the same way at every stage."""
    encoder = instantiate(cfg_encoder)
    if run_cfg is None:
        return encoder
    model = run_cfg.get("model") or {}
    if model.get("cond_type", "pooled") == "tokens":
        if (run_cfg.get("data") or {}).get("condition_source", "text") == "image_embedding":
            raise ValueError("data.condition_source=image_embedding gives one image embedding per image, no token "
                             "states: use model.cond_type=pooled for language-free training")
        from t2ilab.encoders.tokens import TokenConditioning

        encoder = TokenConditioning(encoder, int(model.get("max_tokens", 32)))
    expansion = run_cfg.get("prompt_expansion")
    if expansion is not None and str(expansion.get("kind", "none")) != "none":
        from t2ilab.encoders.prompt_expansion import ExpandedEncoder, build_expander

        data_name = str((run_cfg.get("data") or {}).get("name", ""))
        expander = build_expander(expansion, data_name, cfg_encoder.get("cache_dir"))
        if expander is not None:
            encoder = ExpandedEncoder(encoder, expander)
    return encoder


def build_datamodule(cfg_data: DictConfig, text_encoder: Any) -> Any:
    """The datamodule, wired to the encoder so batches carry cached text embeddings (or, with
    ``data.condition_source=image_embedding``, the encoder's image embeddings: language-free training)."""
    return instantiate(cfg_data, text_encoder=text_encoder, _recursive_=False)


def build_model(cfg_model: DictConfig, cond_dim: int, token_dim: int = 0) -> Any:
    """The family's LightningModule; ``cond_dim`` (and ``token_dim`` for ``cond_type=tokens``) come
    from the encoder."""
    extra = {"token_dim": int(token_dim)} if token_dim and cfg_model.get("cond_type", "pooled") == "tokens" else {}
    return instantiate(cfg_model, cond_dim=int(cond_dim), **extra)


def instantiate_group(node: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a keyed group (callbacks, loggers); null entries are dropped."""
    return [instantiate(v) for v in (node or {}).values() if v is not None and "_target_" in v]
