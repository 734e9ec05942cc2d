"""Hugging Face hub access shared by the encoders: local cache first, ONE quick probe, then download."""

from __future__ import annotations

import logging
import os

import open_clip
from huggingface_hub import constants as hf_constants
from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

from t2ilab.encoders.errors import WeightsUnavailableError

log = logging.getLogger(__name__)


def _hf_offline() -> bool:  # env read at call time (huggingface_hub reads it only at import)
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.strip().upper() in {"1", "ON", "YES", "TRUE"} or bool(hf_constants.HF_HUB_OFFLINE)


def _download_pretrained(model_name: str, tag: str) -> str:
    """Local path of open_clip weights ``model_name``/``tag``: HF cache first, then ONE quick network
    probe (no retry/backoff storm), then the real download. Raises WeightsUnavailableError."""
    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if cfg.get("file"):
        return cfg["file"]
    # open_clip convention: "org/repo/filename" or "org/repo/" (= default file names)
    repo_id, filename = os.path.split(cfg["hf_hub"])
    names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    if filename.endswith((".bin", ".pth")):
        names.insert(0, filename[:-4] + ".safetensors")
    err: Exception | None = None
    for name in names:  # 1) local HF cache: no network at all
        try:
            return hf_hub_download(repo_id, name, local_files_only=True)
        except Exception as e:
            err = e
    reason = "HF_HUB_OFFLINE is set"
    if not _hf_offline():
        timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or 5)
        for name in names:  # 2) one HEAD per candidate, no retries; 3) real download once reachable
            try:
                get_hf_file_metadata(hf_hub_url(repo_id, name), timeout=timeout)
            except Exception as e:
                err = e
                if any(c.__name__ == "EntryNotFoundError" for c in type(e).__mro__):
                    continue  # this file name does not exist in the repo: try the next one
                break
            log.info("downloading open_clip weights %s/%s from huggingface.co/%s", model_name, tag, repo_id)
            try:
                return hf_hub_download(repo_id, name)
            except Exception as e:
                err = e
                break
        reason = f"fetching from the Hugging Face hub failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
    raise WeightsUnavailableError(
        f"Cannot load pretrained weights for open_clip model '{model_name}' (pretrained='{tag}', "
        f"huggingface.co/{repo_id}): {reason} and they are not in the local Hugging Face cache. "
        f"Pass a local weights file instead: encoder.checkpoint_path=/path/to/open_clip_model.safetensors "
        f"(download it from https://huggingface.co/{repo_id} on a machine with internet access). "
        f"On online machines the weights are downloaded and cached automatically."
    ) from err
