"""Token-level conditioning (model.cond_type=tokens): cached token states, the packed layout, UNet
cross-attention (token content matters, padding does not) and the errors for unsupported setups."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from t2ilab.encoders.tokens import TokenConditioning, TokenLayout
from t2ilab.nets.unet import UNet

CAPS = ["a red circle", "a small blue square above a large green triangle on a white background"]

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture
def tiny_encoder(tmp_path):
    from omegaconf import OmegaConf

    from t2ilab.encoders.open_clip_encoder import OpenCLIPEncoder

    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "encoder/clip_tiny.yaml"))
    cfg.pop("_target_")
    cfg["cache_dir"] = str(tmp_path / "cache")
    return lambda: OpenCLIPEncoder(**cfg)


def test_token_states_cached_once_trimmed_fp16_and_shared_on_disk(tiny_encoder):
    enc = tiny_encoder()
    tc = TokenConditioning(enc, max_tokens=32)
    first = tc.encode_text(CAPS)
    forwards = enc.num_text_forward_batches
    assert forwards == 2  # one pooled + one token forward
    again = tc.encode_text(list(reversed(CAPS)) + CAPS)  # all cached: no forward pass at all
    assert enc.num_text_forward_batches == forwards
    assert torch.equal(again[2:], first)
    states = tc.token_states(CAPS)
    assert all(s.dtype == torch.float16 for s in states)
    _, _, mask = tc.layout.unpack(first)
    assert [s.shape[0] for s in states] == mask.sum(1).tolist()  # stored without padding
    assert states[0].shape[0] < states[1].shape[0]
    fresh_enc = tiny_encoder()  # another process: served from the disk shards, model never built
    fresh = TokenConditioning(fresh_enc, max_tokens=32).encode_text(CAPS)
    assert fresh_enc.model is None and torch.allclose(fresh, first)


def test_layout_round_trip_and_truncation():
    layout = TokenLayout(dim=4, token_dim=3, max_tokens=5)
    pooled = torch.randn(2, 4)
    states = [torch.randn(2, 3), torch.randn(7, 3)]  # the second is longer than max_tokens: cut
    packed = layout.pack(pooled, states)
    assert packed.shape == (2, layout.width)
    p, tokens, mask = layout.unpack(packed)
    assert torch.equal(p, pooled) and mask.sum(1).tolist() == [2, 5]
    assert torch.equal(tokens[0, :2], states[0]) and torch.equal(tokens[1], states[1][:5])
    assert not tokens[0, 2:].any()
    with pytest.raises(ValueError, match="token conditioning must be"):
        layout.unpack(pooled)


def _unet(seed=0):
    torch.manual_seed(seed)
    net = UNet(channels=3, cond_dim=8, image_size=8, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
               attn_resolutions=(4,), heads=2, token_dim=6, max_tokens=5, cross_attention_resolutions=(8, 4))
    for m in net.modules():  # zero-initialised outputs would hide the attention path: randomise them
        if isinstance(m, torch.nn.Conv2d) and not m.weight.any():
            torch.nn.init.normal_(m.weight, std=0.2)
    return net.eval()


def test_cross_attention_reads_tokens_and_ignores_padding():
    net, layout = _unet(), TokenLayout(8, 6, 5)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([10, 500])
    pooled = torch.randn(2, 8)
    states = [torch.randn(3, 6), torch.randn(2, 6)]
    cond = layout.pack(pooled, states)
    with torch.no_grad():
        out = net(x, t, cond)
        other = net(x, t, layout.pack(pooled, [torch.randn(3, 6), states[1]]))  # sample 0's words differ
        junk = cond.clone()  # write garbage into the padded token slots only
        _, tokens, mask = layout.unpack(junk)
        tokens[~mask] = 1e3 * torch.randn(int((~mask).sum()), 6)
        padded = net(x, t, torch.cat([pooled, tokens.flatten(1), mask.float()], dim=1))
    assert not torch.allclose(out[0], other[0], atol=1e-4)
    assert torch.allclose(out[1], other[1], atol=1e-5)  # batch items do not mix
    assert torch.allclose(out, padded, atol=1e-5)


def test_pooled_unet_keeps_its_structure():
    pooled_net = UNet(channels=3, cond_dim=8, image_size=8, base_channels=8, channel_mult=(1, 2),
                      num_res_blocks=1, attn_resolutions=(4,), heads=2)
    assert not any("context" in k or ".kv." in k for k in pooled_net.state_dict())
    with pytest.raises(ValueError, match="model.cond_type=tokens"):
        UNet(channels=3, cond_dim=8, image_size=8, cross_attention_resolutions=(8,))


def test_tokens_model_null_condition_and_checkpoint_meta(make_model):
    model = make_model("diffusion", cond_type="tokens", token_dim=6, max_tokens=4)
    assert model.cond_width == 16 + 4 * 7
    null = model.null_cond(3)
    _, _, mask = model.layout.unpack(null)
    assert mask.sum(1).tolist() == [1, 1, 1]  # one learned null token
    cond = model.layout.pack(torch.randn(3, 16), [torch.randn(2, 6)] * 3)
    images = model.generate(cond, generator=torch.Generator().manual_seed(0), num_steps=2)
    assert images.shape == (3, 3, 16, 16)
    with pytest.raises(ValueError, match="model.cond_type=tokens"):
        model.generate(torch.randn(3, 16))  # pooled rows for a token model


def test_unsupported_setups_name_the_option(make_model, tiny_encoder):
    with pytest.raises(ValueError, match="model.cond_type=pooled"):
        make_model("gan", cond_type="tokens", token_dim=6)

    class PooledOnly:
        name, dim, token_dim = "pooled_only", 8, 0

        def encode_text(self, captions):
            return torch.zeros(len(captions), 8)

    with pytest.raises(ValueError, match="provides only a pooled vector"):
        TokenConditioning(PooledOnly(), max_tokens=8)


def test_checkpoint_compatibility_names_encoder_and_cond_type_changes():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from t2ilab.models.checkpoint import check_compatible

    def composed(*over):
        with initialize_config_dir(str(CONF), version_base="1.3"):
            return compose("train", overrides=["paths.cache_dir=/nonexistent", "paths.run_dir=/nonexistent", *over])

    meta = {"config": OmegaConf.to_container(composed(), resolve=True)}
    for over, key in ((["encoder=minilm"], "encoder._target_"), (["model.cond_type=tokens"], "model.cond_type"),
                      (["prompt_expansion=templates"], "prompt_expansion"),
                      (["data.condition_source=image_embedding"], "data.condition_source")):
        with pytest.raises(ValueError, match=key.replace(".", r"\.")):
            check_compatible("x.ckpt", meta, composed(*over))
    # a checkpoint from before these options existed resumes into today's defaults
    old = meta["config"]
    for k in ("cond_type", "max_tokens", "cond_noise"):
        old["model"].pop(k)
    old["model"]["net"].pop("cross_attention_resolutions")
    old["data"].pop("condition_source")
    old.pop("prompt_expansion")
    check_compatible("x.ckpt", {"config": old}, composed())
    check_compatible("x.ckpt", {"config": old}, OmegaConf.create(old))  # sample/eval: an old run's own config
