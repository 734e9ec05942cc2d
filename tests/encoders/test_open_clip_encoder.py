"""OpenCLIPEncoder: tiny random open_clip CLIP (offline), caching, laziness, offline errors, configs."""

from __future__ import annotations

import itertools
import logging
import time

import pytest
import torch
from hydra.utils import instantiate

from t2ilab.encoders import hub
from t2ilab.encoders import open_clip_encoder as oce
from t2ilab.encoders.base import TextEncoder
from t2ilab.encoders.errors import WeightsUnavailableError
from t2ilab.encoders.open_clip_encoder import OpenCLIPEncoder

CAPS = ["a small red circle in the top left on a white background",
        "a small blue circle in the top left on a white background",
        "a small red square in the top left on a white background"]


def test_tiny_dims_normalised_and_fast(make_tiny):
    enc = make_tiny()
    assert isinstance(enc, TextEncoder) and enc.dim == 64 and enc.model is None
    t0 = time.perf_counter()
    e = enc.encode_text(CAPS)
    assert time.perf_counter() - t0 < 2.0  # build + encode on CPU
    assert e.shape == (3, 64) and e.dtype == torch.float32 and e.device.type == "cpu"
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert enc.encode_text([]).shape == (0, 64)
    with pytest.raises(TypeError):
        enc.encode_text(CAPS[0])


def test_seed_determinism_fingerprint_and_global_rng_untouched(make_tiny):
    a, b, c = make_tiny(seed=0), make_tiny(seed=0), make_tiny(seed=1)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert len(a.fingerprint) == 16 and int(a.fingerprint, 16) >= 0
    state = torch.random.get_rng_state()
    ea = a.encode_text(CAPS)
    assert torch.equal(torch.random.get_rng_state(), state)  # seeded init does not reseed the caller
    assert torch.equal(ea, b.encode_text(CAPS))
    assert not torch.allclose(ea, c.encode_text(CAPS), atol=1e-3)


def test_second_call_served_from_memory(make_tiny):
    enc = make_tiny()
    e1 = enc.encode_text(CAPS)
    n = enc.num_text_forward_batches
    assert n == 1
    e2 = enc.encode_text(list(reversed(CAPS)))
    assert enc.num_text_forward_batches == n and torch.equal(e2, e1.flip(0))


def test_new_instance_gets_disk_hits_without_loading(make_tiny, tmp_path):
    e1 = make_tiny(cache_dir=str(tmp_path)).encode_text(CAPS)
    fresh = make_tiny(cache_dir=str(tmp_path))
    e2 = fresh.encode_text(CAPS)
    assert fresh.model is None and fresh.num_text_forward_batches == 0
    assert torch.equal(e1, e2)
    assert (tmp_path / "text_embeddings" / fresh.fingerprint / "meta.json").is_file()
    e3 = fresh.encode_text(CAPS + ["a large green star in the center on a white background"])
    assert fresh.num_text_forward_batches == 1 and torch.equal(e3[:3], e1)  # only the new caption ran


def test_dedup_within_a_call(make_tiny):
    enc = make_tiny(batch_size=1)
    e = enc.encode_text([CAPS[0], CAPS[1], CAPS[0], CAPS[0]])
    assert enc.num_text_forward_batches == 2  # two unique captions, batch_size 1
    assert torch.equal(e[0], e[2]) and torch.equal(e[0], e[3])


def test_attribute_words_give_separated_embeddings(make_tiny):
    """The quickstart conditions on clip_tiny: captions differing in one attribute must differ clearly."""
    colours, shapes = ["red", "green", "blue", "yellow"], ["circle", "square", "triangle", "star"]
    caps = [f"a small {c} {s} in the top left on a white background" for c in colours for s in shapes]
    e = make_tiny().encode_text(caps).view(4, 4, -1)
    col = torch.stack([e[i, s] @ e[j, s] for i, j in itertools.combinations(range(4), 2) for s in range(4)])
    shp = torch.stack([e[c, i] @ e[c, j] for i, j in itertools.combinations(range(4), 2) for c in range(4)])
    assert col.mean() < 0.9 and shp.mean() < 0.95 and max(col.max(), shp.max()) < 0.99


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32])
def test_encode_image_shapes(make_tiny, channels, size):
    enc = make_tiny(batch_size=2)
    e = enc.encode_image(torch.rand(3, channels, size, size))
    assert e.shape == (3, 64) and e.dtype == torch.float32
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert enc.num_image_forward_batches == 2 and enc.num_text_forward_batches == 0


def test_encode_image_rejects_bad_input(make_tiny):
    enc = make_tiny()
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        enc.encode_image(torch.rand(1, 3, 32, 32) * 2 - 1)
    with pytest.raises(ValueError):
        enc.encode_image(torch.rand(1, 4, 32, 32))


def test_checkpoint_path_roundtrip(make_tiny, tmp_path):
    ref = make_tiny()
    e_ref = ref.encode_text(CAPS)
    path = tmp_path / "tiny.pt"
    torch.save(ref.model.state_dict(), path)
    enc = make_tiny(random_init=False, checkpoint_path=str(path), cache_dir=str(tmp_path))
    assert enc.fingerprint != ref.fingerprint and enc.model is None
    assert torch.allclose(enc.encode_text(CAPS), e_ref, atol=1e-6)
    assert make_tiny(random_init=False, checkpoint_path=str(path)).fingerprint == enc.fingerprint


def test_missing_checkpoint_path_names_the_path(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(WeightsUnavailableError, match="nope.safetensors"):
        OpenCLIPEncoder(model_name="ViT-B-32", checkpoint_path=str(missing))


def test_offline_pretrained_gives_one_clear_error(monkeypatch, tmp_path, caplog):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # empty HF cache, even on online machines
    enc = OpenCLIPEncoder(model_name="ViT-B-32", pretrained="laion2b_s34b_b79k", cache_dir=None)
    assert enc.dim == 512 and len(enc.fingerprint) == 16  # no weights needed for these
    t0 = time.perf_counter()
    with caplog.at_level(logging.WARNING), pytest.raises(WeightsUnavailableError) as info:
        enc.encode_text(["a cat"])
    assert time.perf_counter() - t0 < 5
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # no retry/warning spam
    msg = str(info.value)
    assert "checkpoint_path" in msg and "ViT-B-32" in msg and "laion2b_s34b_b79k" in msg
    assert info.value.__cause__ is not None and enc.model is None


def _fake_hub(monkeypatch, probe_error=None):
    class EntryNotFoundError(Exception):
        pass

    calls = []

    def download(repo_id, filename, local_files_only=False):
        calls.append(("download", filename, local_files_only))
        if local_files_only:
            raise FileNotFoundError("not cached")
        return f"/hf/{repo_id}/{filename}"

    def metadata(url, timeout=None):
        calls.append(("probe", url.rsplit("/", 1)[-1]))
        if probe_error is not None:
            raise probe_error
        if url.endswith(".safetensors"):
            raise EntryNotFoundError("404")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub.hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "hf_hub_download", download)
    monkeypatch.setattr(hub, "get_hf_file_metadata", metadata)
    return calls


def test_online_download_path_with_mocked_hub(monkeypatch):
    calls = _fake_hub(monkeypatch)
    path = oce._download_pretrained("ViT-B-32", "laion2b_s34b_b79k")
    assert path.endswith("laion/CLIP-ViT-B-32-laion2B-s34B-b79K/open_clip_pytorch_model.bin")
    assert calls[-1] == ("download", "open_clip_pytorch_model.bin", False)  # after the .safetensors 404


def test_unreachable_hub_fails_after_one_probe(monkeypatch):
    calls = _fake_hub(monkeypatch, probe_error=ConnectionError("Name or service not known"))
    with pytest.raises(WeightsUnavailableError, match="checkpoint_path=") as info:
        oce._download_pretrained("ViT-B-32", "laion2b_s34b_b79k")
    assert isinstance(info.value.__cause__, ConnectionError)
    assert [c for c in calls if c[0] == "probe"] == [("probe", "open_clip_model.safetensors")]


def test_constructor_validation(make_tiny):
    with pytest.raises(ValueError, match="embed_dim=64"):
        make_tiny(dim=128)
    with pytest.raises(ValueError, match="no weights source"):
        OpenCLIPEncoder(model_name="ViT-B-32")
    with pytest.raises(ValueError, match="unknown open_clip pretrained tag"):
        OpenCLIPEncoder(model_name="ViT-B-32", pretrained="no_such_tag")


@pytest.mark.parametrize("name,dim", [("clip_tiny", 64), ("clip_vit_b32", 512), ("clip_vit_l14", 768)])
def test_configs_instantiate_lazily(name, dim, tmp_path, encoder_cfg):
    enc = instantiate(encoder_cfg(name, cache_dir=str(tmp_path)))
    assert isinstance(enc, OpenCLIPEncoder) and enc.name == name and enc.dim == dim
    assert enc.model is None and len(enc.fingerprint) == 16  # nothing downloaded or built
