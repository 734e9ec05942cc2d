"""Prompt accuracy on REAL Fashion-MNIST images equals the reference classifier's held-out accuracy
(the classifier is trained once on the real train split and cached); small grayscale images go
through Inception and CLIP exactly like their RGB (channel-repeated) versions."""

from __future__ import annotations

import pytest
import torch

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
    noise = ev.evaluate(noise_model(64, channels=1, noise=1.0))
    assert noise["prompt_accuracy"] < held - 0.3  # pure noise is not classified as the prompted garment
    # classifier_fd (Frechet distance in the classifier's features): real images are far closer to the
    # real split than noise is
    assert 0 <= real["classifier_fd"] < 0.2 * noise["classifier_fd"], (real["classifier_fd"], noise["classifier_fd"])


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
