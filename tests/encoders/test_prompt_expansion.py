"""Prompt expansion: template descriptions (vocab coverage), the ExpandedEncoder wrapper, and LMExpander
with a tiny randomly initialised GPT-2 whose tokenizer is trained offline here (no hub access)."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from t2ilab.data import shapes
from t2ilab.data.class_prompts import CIFAR10DataModule as Cifar
from t2ilab.data.class_prompts import FashionMNISTDataModule as FMnist
from t2ilab.data.class_prompts import MNISTDataModule as Mnist
from t2ilab.data.descriptions import TemplateExpander, dataset_vocab, term_descriptions
from t2ilab.encoders import prompt_expansion as pe
from t2ilab.encoders.base import TextEncoder
from t2ilab.encoders.errors import WeightsUnavailableError
from t2ilab.encoders.prompt_expansion import ExpandedEncoder, LMExpander

CONF = Path(__file__).resolve().parents[2] / "conf" / "prompt_expansion"
PROMPTS = ["a photo of a sneaker", "a small red circle on a white background", "a large blue star"]


# ----------------------------------------------------------------------------- templates
def test_template_format_and_determinism():
    fm = TemplateExpander(term_descriptions("fashion_mnist"))
    assert fm(["a photo of a sneaker"]) == [f"a photo of a sneaker, {term_descriptions('fashion_mnist')['sneaker']}"]
    d = term_descriptions("shapes")
    out = TemplateExpander(d)(["a small red circle on a white background"])[0]
    assert out == ("a small red circle on a white background" + "".join(
        f"; {t}: {d[t]}" for t in ("small", "red", "circle", "white")))
    a, b = TemplateExpander(d), TemplateExpander(dict(reversed(list(d.items()))))
    caps = [shapes.render_caption(r) for r in shapes.generate_shapes(50, 3, image_size=8, supersample=1)[1]]
    assert a(caps) == b(caps) == a(caps)  # independent of dict order and of earlier calls
    assert TemplateExpander(d, style="inline")(["a RED circle and a red square"]) == [
        f"a RED ({d['red']}) circle ({d['circle']}) and a red square ({d['square']})"]
    with pytest.raises(ValueError, match="style"):
        TemplateExpander(d, style="nope")


def test_template_matching_rules():
    fm = TemplateExpander(term_descriptions("fashion_mnist"))
    desc = term_descriptions("fashion_mnist")
    for unknown in ["a photo of a giraffe", "two sneakers", "", "SNEAKERS on a shelf"]:
        assert fm([unknown]) == [unknown]  # no known whole word: unchanged
    assert fm(["a T-Shirt"]) == [f"a T-Shirt, {desc['t-shirt']}"]  # case-insensitive, not "shirt"
    assert fm(["an ankle boot"]) == [f"an ankle boot, {desc['ankle boot']}"]  # longest match first
    assert fm(["a t-shirt/top"]) == [f"a t-shirt/top, {desc['t-shirt/top']}"]
    # every class caption of the dataset gets its class's description
    for name in FMnist.CLASS_NAMES:
        assert fm([f"a photo of a {name}"])[0].endswith(desc[name])


@pytest.mark.parametrize(("dataset", "vocab"), [
    ("shapes", (*shapes.COLORS, *shapes.SHAPES, *shapes.SIZES, *shapes.BACKGROUNDS)),
    ("fashion_mnist", FMnist.CLASS_NAMES), ("mnist", Mnist.CLASS_NAMES),
    ("cifar10", Cifar.CLASS_NAMES)])
def test_every_vocab_word_has_a_description(dataset, vocab):
    d = term_descriptions(dataset)
    assert set(dataset_vocab(dataset)) == set(vocab)
    assert [w for w in vocab if not d.get(w, "").strip()] == []
    for term, text in d.items():  # a description naming another term would blur attribute binding
        others = [w for w in vocab if w != term and re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text, re.IGNORECASE)]
        assert others == [], (term, text)


def test_unknown_dataset_and_descriptions_file(tmp_path):
    with pytest.raises(ValueError, match=r"prompt_expansion=lm.*descriptions_file"):
        term_descriptions("captions")
    (tmp_path / "terms.json").write_text(json.dumps({"Corgi": "a short-legged dog"}))
    (tmp_path / "terms.yaml").write_text("sneaker: a shoe for running\nlighthouse: a tall white tower\n")
    exp = pe.build_expander({"kind": "templates", "descriptions_file": str(tmp_path / "terms.json")}, "captions", None)
    assert exp(["my corgi", "a cat"]) == ["my corgi, a short-legged dog", "a cat"]
    merged = term_descriptions("fashion_mnist", tmp_path / "terms.yaml")  # extends / overrides built-ins
    assert merged["sneaker"] == "a shoe for running" and "lighthouse" in merged and "bag" in merged
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        term_descriptions("captions", tmp_path / "bad.yaml")
    with pytest.raises(FileNotFoundError, match="descriptions_file"):
        term_descriptions("captions", tmp_path / "missing.yaml")


def test_build_expander_from_configs(tmp_path, tiny_lm):
    node = lambda name, **kw: OmegaConf.merge(OmegaConf.load(CONF / f"{name}.yaml"), kw)
    assert pe.build_expander(node("none"), "shapes", tmp_path) is None and pe.build_expander(None, "x", None) is None
    assert isinstance(pe.build_expander(node("templates"), "shapes", tmp_path), pe.TemplateExpander)
    lm = pe.build_expander(node("lm", model_name_or_path=str(tiny_lm)), "captions", tmp_path)
    assert isinstance(lm, LMExpander) and lm.model is None and lm.dir.parent == tmp_path / "prompt_expansions"
    assert lm.template == "{prompt}. In detail, this image shows" and lm.do_sample is False
    with pytest.raises(ValueError, match=r"none.*templates.*lm"):
        pe.build_expander({"kind": "gpt5"}, "shapes", None)
    with pytest.raises(ValueError, match="temperature"):
        pe.build_expander({"kind": "lm", "model_name_or_path": str(tiny_lm), "temperature": 2}, "shapes", None)


# ----------------------------------------------------------------------------- ExpandedEncoder
class FakeEncoder:
    """Records what reaches it; has the optional attributes a real encoder may have."""

    dim, token_dim, name, cache_dir, fingerprint = 4, 8, "fake", "/tmp/cache", "abc123"

    def __init__(self):
        self.calls: list[list[str]] = []
        self.batch_size = 1

    def encode_text(self, captions):
        self.calls.append(list(captions))
        return torch.tensor([[float(len(c))] * 4 for c in captions])

    def encode_text_tokens(self, captions, pad=True):
        self.calls.append(list(captions))
        return torch.zeros(len(captions), 3, 8), pad

    def encode_image(self, images):
        return torch.ones(len(images), 4)

    def text_tokens(self, captions):
        return [c.split() for c in captions]


class CountingExpander:
    def __init__(self):
        self.seen: list[str] = []

    def __call__(self, captions):
        self.seen.extend(captions)
        return [c + " EXPANDED" for c in captions]


def test_expanded_encoder_passes_expanded_text_and_forwards_attributes():
    inner, exp = FakeEncoder(), CountingExpander()
    enc = ExpandedEncoder(inner, exp)
    out = enc.encode_text(["a", "bb", "a"])
    assert inner.calls == [["a EXPANDED", "bb EXPANDED", "a EXPANDED"]] and out[:, 0].tolist() == [10, 11, 10]
    assert enc.encode_text_tokens(["bb", "c"], pad=False)[1] is False
    assert inner.calls[-1] == ["bb EXPANDED", "c EXPANDED"]
    assert exp.seen == ["a", "bb", "c"]  # memoised: each caption expanded once
    assert (enc.dim, enc.token_dim, enc.name, enc.cache_dir, enc.fingerprint) == (4, 8, "fake", "/tmp/cache", "abc123")
    assert enc.encode_image(torch.zeros(2, 3, 8, 8)).shape == (2, 4) and enc.text_tokens(["x y"]) == [["x", "y"]]
    assert isinstance(enc, TextEncoder) and enc.expand(["a"]) == ["a EXPANDED"]
    enc.batch_size = 7  # writes reach the wrapped encoder
    assert inner.batch_size == 7 and "batch_size" not in vars(enc)
    with pytest.raises(AttributeError):
        _ = enc.no_such_attribute
    with pytest.raises(TypeError):
        enc.encode_text("a single string")
    clone = pickle.loads(pickle.dumps(enc))
    assert clone.encode_text(["a"])[0, 0] == 10 and clone.name == "fake"
    no_tokens = SimpleNamespace(dim=4, encode_text=lambda captions: torch.zeros(len(captions), 4))
    assert not hasattr(ExpandedEncoder(no_tokens, exp), "encode_text_tokens")  # only if the inner one has it


def test_expanded_encoder_on_real_tiny_clip_caches_expanded_text(make_tiny):
    inner = make_tiny()
    exp = TemplateExpander(term_descriptions("shapes"))
    enc = ExpandedEncoder(inner, exp)
    e = enc.encode_text(PROMPTS[1:])
    assert torch.equal(e, inner.encode_text(exp(PROMPTS[1:])))
    assert all(x in inner.cache for x in exp(PROMPTS[1:])) and PROMPTS[1] not in inner.cache
    assert enc.fingerprint == inner.fingerprint and enc.dim == 64


def test_token_conditioning_wrapped_inside_sees_expanded_text(make_tiny, caplog):
    from t2ilab.encoders.tokens import TokenConditioning

    exp = TemplateExpander(term_descriptions("shapes"))
    enc = ExpandedEncoder(TokenConditioning(make_tiny(), max_tokens=80), exp)
    ref = TokenConditioning(make_tiny(), max_tokens=80)
    assert torch.equal(enc.encode_text(PROMPTS[1:]), ref.encode_text(exp(PROMPTS[1:])))
    assert enc.layout.width == ref.layout.width  # attributes of the token wrapper are forwarded too
    assert "UNEXPANDED" not in caplog.text
    ExpandedEncoder(make_tiny(), exp).text_tokens(PROMPTS[:1])  # the wrong order is reported
    assert "UNEXPANDED" in caplog.text


# ----------------------------------------------------------------------------- LMExpander (tiny GPT-2)
@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A 2-layer, 32-wide random GPT-2 + a byte-level BPE tokenizer trained here on caption text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = [*shapes.COLORS, *shapes.SHAPES, *shapes.SIZES, *shapes.BACKGROUNDS, *FMnist.CLASS_NAMES]
    text = [t.format(size=s, color=c, shape=k, pos="in the center", bg="white")
            for t in shapes.SINGLE_TEMPLATES for s, c, k in zip(words, words[3:], words[7:])]
    text += [f"{p}. In detail, this image shows a {w} {v}." for p in PROMPTS for w, v in zip(words, words[5:])]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    eos = fast.eos_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=128, vocab_size=len(fast),
                                           bos_token_id=eos, eos_token_id=eos))
    path = tmp_path_factory.mktemp("tiny_gpt2")
    fast.save_pretrained(path)
    model.save_pretrained(path)
    return path


def test_lm_deterministic_across_instances_and_rng_untouched(tiny_lm):
    a, b = LMExpander(str(tiny_lm), device="cpu"), LMExpander(str(tiny_lm), device="cpu", batch_size=2)
    state = torch.random.get_rng_state()
    out = a(PROMPTS)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert out == b(list(reversed(PROMPTS)))[::-1] == a(PROMPTS)
    assert a.num_model_loads == 1 and a.num_forward_batches == 1 and b.num_forward_batches == 2
    for p, o in zip(PROMPTS, out):
        assert o == p or (o.startswith(p + ", ") and "\n" not in o and "\ufffd" not in o and len(o) <= len(p) + 162)
    assert any(o != p for o in out)


def test_lm_disk_cache_served_without_loading(tiny_lm, tmp_path):
    first = LMExpander(str(tiny_lm), device="cpu", cache_dir=tmp_path)
    out = first(PROMPTS)
    shards = list(first.dir.glob("shard-*.jsonl"))
    assert len(shards) == 1 and (first.dir / "meta.json").is_file() and not list(first.dir.glob(".tmp-*"))
    second = LMExpander(str(tiny_lm), device="cpu", cache_dir=tmp_path)
    assert second.fingerprint == first.fingerprint and second(PROMPTS[::-1]) == out[::-1]
    assert second.model is None and second.num_model_loads == 0 and second.num_forward_batches == 0
    other = LMExpander(str(tiny_lm), device="cpu", cache_dir=tmp_path)  # concurrent writer of other prompts
    other(["a green cross"])
    second(["a pink square"])
    third = LMExpander(str(tiny_lm), device="cpu", cache_dir=tmp_path)
    (third.dir / "shard-0-corrupt.jsonl").write_text("{not json\n")
    third(PROMPTS + ["a green cross", "a pink square"])
    assert third.num_model_loads == 0 and len(list(third.dir.glob("shard-*.jsonl"))) == 4


def test_lm_fingerprint_covers_settings_and_weights(tiny_lm, tmp_path):
    fp = lambda path=tiny_lm, **kw: LMExpander(str(path), **kw).fingerprint
    base = fp()
    assert base == fp(batch_size=3, device="cuda")  # batching / device do not change the text
    changed = [fp(seed=1), fp(prompt_template="{prompt}, which looks like"), fp(max_new_tokens=8), fp(do_sample=True)]
    assert len({base, *changed}) == 5
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in tiny_lm.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert fp(copy) == base
    (copy / "config.json").write_text((copy / "config.json").read_text() + "\n")
    assert fp(copy) != base
    assert LMExpander("gpt2").fingerprint != LMExpander("gpt2", revision="abc").fingerprint  # repo id + revision


def test_lm_sampling_is_seeded_per_prompt(tiny_lm):
    a = LMExpander(str(tiny_lm), device="cpu", do_sample=True, seed=3)
    b = LMExpander(str(tiny_lm), device="cpu", do_sample=True, seed=3)
    out = a(PROMPTS)
    assert b(PROMPTS[1:2]) == out[1:2]  # each prompt is generated alone: its text does not depend on the batch
    assert b(PROMPTS) == out and b.num_forward_batches == len(PROMPTS)


def test_lm_unusable_output_keeps_prompt(tiny_lm, monkeypatch):
    exp = LMExpander(str(tiny_lm), device="cpu")
    monkeypatch.setattr(exp, "_generate", lambda prompts, seed: ["\n\n  ..." for _ in prompts])
    exp.load()
    assert exp(PROMPTS) == PROMPTS


def test_clean_clause():
    assert pe.clean_clause(" a red ball.\nNext") == "a red ball"
    assert pe.clean_clause("\n\na shiny 3.5 inch cube! more") == "a shiny 3.5 inch cube"
    assert pe.clean_clause("\"quoted, text\" rest") == "quoted, text\" rest"
    assert pe.clean_clause("a caf\ufffd\ufffd\x07 sign") == "a caf sign"
    assert pe.clean_clause("...") is None and pe.clean_clause("") is None and pe.clean_clause("a") is None
    long = pe.clean_clause("word " * 100)
    assert len(long) <= 160 and long.endswith("word")


def test_missing_weights_name_the_option(tmp_path, monkeypatch):
    with pytest.raises(WeightsUnavailableError, match=r"prompt_expansion\.model_name_or_path=.*--local-dir"):
        LMExpander(str(tmp_path / "no_such_model"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    exp = LMExpander("t2ilab-tests/not-a-real-model")  # a repo id: the error comes lazily, on first use
    with pytest.raises(WeightsUnavailableError, match="HF_HUB_OFFLINE"):
        exp(["a red circle"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsUnavailableError, match="could not be loaded"):
        LMExpander(str(tmp_path / "empty"))(["a red circle"])
