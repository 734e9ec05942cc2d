"""Prompt accuracy on REAL Fashion-MNIST images equals the reference classifier's held-out accuracy
(the classifier is trained once on the real train split and cached); small grayscale images go
through Inception and CLIP exactly like their RGB (channel-repeated) versions."""

from __future__ import annotations

import pytest
import torch

from t2ilab.evaluation.classifier import weights_digest
from t2ilab.evaluation.engine import Evaluator


def test_prompt_accuracy_of_real_images_matches_heldout_accuracy(fmnist_dm, metrics_cfg, standin, replay_model,
                                                                   noise_model, tmp_path):
    cfg = metrics_cfg(num_samples=300, batch_size=100, clip_score=False, kid_subset_size=50,
                      classifier={"epochs": 2, "max_train": 2000, "batch_size": 128})
    ev = Evaluator(cfg, fmnist_dm, str(tmp_path), feature_extractor=standin(0))
    real = ev.evaluate(replay_model(fmnist_dm))
    held = real["classifier_heldout_accuracy"]
    assert held > 0.7, held  # 2000 images x 2 epochs: a useful classifier
    # 300 samples drawn from the same split: binomial sd ~0.02 -> 0.07 is > 3 sd
    assert real["prompt_accuracy"] == pytest.approx(held, abs=0.07)
    assert real["prompt_accuracy_n"] == 300  # class captions always state the label
    # the classifier was cached: a new evaluator loads it (same key, same accuracy) instead of training
    again = Evaluator(cfg, fmnist_dm, str(tmp_path), feature_extractor=standin(0)).prepare("cpu")
    assert again.classifier.key == ev.classifier.key and again.classifier.heldout_accuracy == held
    # the weights' digest is in the metrics (classifiers trained on two machines differ: compare at one digest)
    assert real["meta"]["classifier_weights"] == again.classifier.weights_digest == ev.classifier.weights_digest
    state = {k: v.clone() for k, v in ev.classifier.net.state_dict().items()}
    assert weights_digest(state) == ev.classifier.weights_digest
    first = next(k for k in sorted(state) if state[k].is_floating_point())
    state[first].view(-1)[0] += 1e-4  # one weight, a small change: another classifier
    assert weights_digest(state) != ev.classifier.weights_digest
    noise = ev.evaluate(noise_model(64, channels=1, noise=1.0))
    assert noise["prompt_accuracy"] < held - 0.3  # pure noise is not classified as the prompted garment
    # classifier_fd (Frechet distance in the classifier's features): real images are far closer to the
    # real split than noise is
    assert 0 <= real["classifier_fd"] < 0.2 * noise["classifier_fd"], (real["classifier_fd"], noise["classifier_fd"])
    # per-class truth: every class prompted, the counts' diagonal is the overall accuracy
    names = list(fmnist_dm.class_names)
    per = {n: real[f"class_accuracy/{n}"] for n in names}
    counts = torch.tensor(real["confusion"]["counts"])
    assert real["confusion"]["classes"] == names and int(counts.sum()) == 300
    assert float(counts.diagonal().sum() / 300) == pytest.approx(real["prompt_accuracy"])
    assert real["prompt_accuracy_worst"] == min(per.values())
    # a "model" that draws trousers whenever a pullover is asked for: that class collapses, the pair tops the
    # list (trousers, not coats: this small classifier itself reads a fifth of real coats as pullovers)
    swapped = replay_model(fmnist_dm)
    pullover, trouser = names.index("pullover"), names.index("trouser")
    trousers = [i for i in range(len(swapped.ds)) if swapped.ds.label(i) == trouser]
    for caption, items in swapped.items.items():
        if items and swapped.ds.label(items[0]) == pullover:
            swapped.items[caption] = trousers
    bad = ev.evaluate(swapped)
    assert bad["class_accuracy/pullover"] < 0.2 < per["pullover"]
    assert bad["prompt_accuracy_worst"] == bad["class_accuracy/pullover"]
    top = bad["confusions"][0]
    assert (top["prompted"], top["drawn_as"]) == ("pullover", "trouser") and top["fraction"] > 0.8
    assert bad["confusion"]["counts"][pullover][trouser] == top["count"]


def test_gray_images_equal_their_rgb_repeat_in_inception_and_clip(extractor, metrics_cfg):
    """1-channel uint8 images are repeated to 3 channels BEFORE the extractors' own resizing
    (Inception: torch-fidelity's bilinear resize to 299 inside the network; CLIP: open_clip's
    resize + centre crop + normalisation), so gray and RGB-repeated inputs give identical features.
    28 px = native Fashion-MNIST (the 32 px padded case is in test_torch_fidelity_agreement)."""
    from t2ilab.evaluation.clip import ClipScorer

    gray = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    rgb = gray.repeat(1, 3, 1, 1)
    f_gray, f_rgb = extractor(gray), extractor(rgb)
    assert f_gray["2048"].shape == (2, 2048)
    for k in ("2048", "logits_unbiased"):
        assert torch.equal(f_gray[k], f_rgb[k]), k
    scorer = ClipScorer(metrics_cfg()["clip"], None, "cpu")
    text = scorer.encode_prompts(["a photo of a sneaker"] * 2)
    assert torch.equal(scorer.score(gray, text), scorer.score(rgb, text))


def test_per_class_accuracy_confusions_and_the_summary_line():
    from t2ilab.evaluation.results import scalar_metrics, summary_line
    from t2ilab.evaluation.scoring import per_class

    names = ["tee", "coat", "bag", "shoe"]  # "shoe" never prompted: no accuracy for it
    labels = torch.tensor([0] * 4 + [1] * 5 + [2] * 2)
    pred = torch.tensor([0, 0, 0, 1] + [1, 0, 0, 3, 1] + [2, 2])
    out = per_class(pred, labels, names)
    assert out["class_accuracy/tee"] == 0.75 and out["class_accuracy/coat"] == 0.4 and out["class_accuracy/bag"] == 1.0
    assert "class_accuracy/shoe" not in out and out["prompt_accuracy_worst"] == 0.4
    assert out["confusion"]["counts"][1] == [2, 2, 0, 1]
    # ordered by the share of the prompted class: coat->tee 2/5, tee->coat 1/4, coat->shoe 1/5
    assert [(c["prompted"], c["drawn_as"], c["count"]) for c in out["confusions"]] == [
        ("coat", "tee", 2), ("tee", "coat", 1), ("coat", "shoe", 1)]
    line = summary_line({"prompt_accuracy": 0.6, **out, "skipped": {}})
    assert "weakest classes: coat 0.40, tee 0.75, bag 1.00" in line and "coat drawn as tee 40%" in line
    assert "class_accuracy/" not in line
    assert scalar_metrics(out).keys() == {"class_accuracy/tee", "class_accuracy/coat", "class_accuracy/bag",
                                          "prompt_accuracy_worst"}
