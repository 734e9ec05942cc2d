"""Files users hand us (issue 11): wrong encoding, wrong type, truncated, mismatched — each is an
error that names the file, what was expected and the fix; over-long prompts are warned about."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from omegaconf import OmegaConf

from t2ilab.data.captions import read_captions_file
from t2ilab.models.checkpoint import check_compatible, read_metadata
from t2ilab.cli.sample import read_prompts

LATIN1 = "a caf\u00e9 with a red circle\n".encode("latin-1")


def test_non_utf8_prompts_file_names_the_file_and_the_fix(tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_bytes(LATIN1)
    with pytest.raises(ValueError, match=r"prompts_file=.*prompts\.txt is not UTF-8 text \(byte 5.*re-save it as UTF-8"):
        read_prompts(None, str(f))
    f.write_bytes("\ufeffa caf\u00e9\n".encode("utf-8"))  # UTF-8 with BOM is fine
    assert read_prompts(None, str(f)) == ["a caf\u00e9"]


def test_non_utf8_captions_file_names_the_file(tmp_path):
    f = tmp_path / "captions.csv"
    f.write_bytes(b"file,caption\nimg.png," + LATIN1)
    with pytest.raises(ValueError, match=r"captions file .*captions\.csv is not UTF-8 text"):
        read_captions_file(f)


def test_text_file_or_truncated_checkpoint_is_a_clear_error(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match=r"notes\.txt could not be read .*truncated .* or not a checkpoint"):
        read_metadata(txt)
    good = tmp_path / "m.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}, "t2ilab": {"config": {"a": 1}}}, good)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cut\.ckpt could not be read"):
        read_metadata(cut)
    assert read_metadata(good)[1]["config"] == {"a": 1}


def test_resume_into_a_different_config_lists_the_differences_and_the_original_overrides(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"overrides": ["experiment=fmnist_diffusion", "seed=1"]}))
    ckpt = run / "checkpoints" / "last.ckpt"
    old = {"model": {"_target_": "t2ilab.models.diffusion.DiffusionModule", "net": {"base_channels": 32}},
           "data": {"image_size": 28, "channels": 1}, "encoder": {"model_name": "tiny"}}
    new = OmegaConf.create({**old, "data": {"image_size": 32, "channels": 3}})
    with pytest.raises(ValueError) as e:
        check_compatible(ckpt, {"config": old}, new)
    msg = str(e.value)
    assert "data.image_size: checkpoint 28 != now 32" in msg and "data.channels" in msg
    assert "experiment=fmnist_diffusion seed=1" in msg and "model.net" not in msg
    check_compatible(ckpt, {"config": old}, OmegaConf.create(old))  # same config: fine


def test_captions_longer_than_the_context_are_warned_about(caplog):
    import open_clip

    from t2ilab.encoders.base import warn_if_truncated

    tok = open_clip.tokenizer.SimpleTokenizer(context_length=12)
    with caplog.at_level(logging.WARNING):
        n = warn_if_truncated(tok, ["a red circle", " ".join(["a large blue square"] * 5)])
    assert n == 1 and "exceed the text encoder's context of 12 tokens" in caplog.text
    assert warn_if_truncated(tok, ["a red circle"]) == 0


def test_wrong_types_are_rejected_with_key_value_and_example():
    from hydra import compose, initialize_config_dir

    from t2ilab.utils.config import CONF_DIR
    from t2ilab.utils.schema import validate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        ok = compose("train", overrides=["model.optimizer_g.lr=1e-4", "trainer.max_steps=10", "experiment=fmnist_gan"])
        validate(ok)  # every preset's values pass
        bad = compose("train", overrides=["trainer.max_steps=abc", "model.optimizer.lr=abc", "data.batch_size=1.5",
                                          "model.sampling.guidance_scale=true"])
    with pytest.raises(ValueError) as e:
        validate(bad)
    msg = str(e.value)
    for part in ("trainer.max_steps='abc' (str) must be an integer, e.g. trainer.max_steps=20000",
                 "model.optimizer.lr='abc'", "data.batch_size=1.5 (float) must be an integer",
                 "model.sampling.guidance_scale=True (bool) must be a number"):
        assert part in msg, msg


@pytest.mark.parametrize("model,override,expected", [
    ("gan", "model.adv_loss=wasserstein", "model.adv_loss='wasserstein' (str) must be one of hinge, ns"),
    ("diffusion", "model.schedule=sigmoid", "must be one of cosine, linear"),
    ("vae", "model.recon=l1", "must be one of mse, bce, gaussian, laplace"),
    ("diffusion", "trainer.max_steps='100'", "trainer.max_steps='100' (str) must be an integer"),
    ("gan", "model.sampling.truncation=abc", "model.sampling.truncation='abc' (str) must be a number or null"),
    ("vae", "model.net.base_channels=[32]", "model.net.base_channels=[32] (list) must be an integer"),
])
def test_invalid_choices_and_quoted_numbers_are_rejected_before_work(model, override, expected):
    from hydra import compose, initialize_config_dir

    from t2ilab.utils.config import CONF_DIR
    from t2ilab.utils.schema import validate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", override])
    with pytest.raises(ValueError, match="stopped before any work") as e:
        validate(cfg)
    assert expected in str(e.value), str(e.value)


def test_every_shipped_config_passes_the_type_checks():
    import itertools

    from hydra import compose, initialize_config_dir

    from t2ilab.utils.config import CONF_DIR
    from t2ilab.utils.schema import validate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for exp in (p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")):
            validate(compose("train", overrides=[f"experiment={exp}"]))
        for m, d in itertools.product(("diffusion", "gan", "vae"), ("shapes", "fashion_mnist", "cifar10", "captions")):
            validate(compose("train", overrides=[f"model={m}", f"data={d}", "trainer=gpu"]))
        for name in ("eval", "sample"):
            validate(compose(name, overrides=["ckpt_path=x"]))
