"""The engine's FID/KID/IS/precision-recall equal torch-fidelity's on the same image folders
(random-weight InceptionV3 loaded through the weights-path option; 1-channel PNGs included).

The engine's path: PNG folder -> ``load_image_folder`` (PIL RGB conversion, like torch-fidelity) ->
InceptionExtractor -> fidelity.frechet_stats/frechet_distance, kid, inception_score,
precision_recall. torch-fidelity's path: ``calculate_metrics(input1=DIR, input2=DIR)``."""

from __future__ import annotations

import math

import pytest
import torch
import torch_fidelity
from torch_fidelity.metric_prc import prc_features_to_metric

from t2ilab.evaluation import fidelity as fm
from t2ilab.evaluation.images import SampleWriter, load_image_folder, to_uint8

N, KID_SUBSET, ISC_SPLITS = 12, 8, 3  # small: 4 Inception passes of N images dominate the run time


def _images(seed: int, channels: int) -> torch.Tensor:
    """Structured 32px images: smooth random blobs + noise (distribution differs with seed)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(N, channels, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False)
    return to_uint8((0.8 * x + 0.2 * torch.rand(N, channels, 32, 32, generator=g)).clamp(0, 1))


@pytest.fixture(scope="module")
def folders(tmp_path_factory, extractor):
    """(dir_gen RGB, dir_real 1-channel PNGs, engine features of both folders)."""
    root = tmp_path_factory.mktemp("folders")
    SampleWriter(root / "gen").write_images(_images(1, 3), range(N))
    SampleWriter(root / "real").write_images(_images(2, 1), range(N))
    return (root / "gen", root / "real", extractor(load_image_folder(root / "gen")),
            extractor(load_image_folder(root / "real")))


@pytest.fixture(scope="module")
def reference(folders, inception_weights, blas_threads):
    gen_dir, real_dir, _, _ = folders
    with blas_threads(1):  # torch-fidelity's numpy eigvals: ~2 s instead of ~24 s on 2 cores
        return torch_fidelity.calculate_metrics(
            input1=str(gen_dir), input2=str(real_dir), fid=True, kid=True, isc=True, prc=True,
            feature_extractor="inception-v3-compat", feature_layer_prc="2048",
            feature_extractor_weights_path=inception_weights, kid_subset_size=KID_SUBSET, isc_splits=ISC_SPLITS,
            cuda=False, cache=False, verbose=False, save_cpu_ram=True)


def _close(a: float, b: float, rel: float = 1e-4) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


def test_fid_kid_isc_match_torch_fidelity(folders, reference):
    _, _, f_gen, f_real = folders
    fid = fm.frechet_distance(fm.frechet_stats(f_gen["2048"]), fm.frechet_stats(f_real["2048"]))
    kid = fm.kid(f_gen["2048"], f_real["2048"], subset_size=KID_SUBSET)
    isc = fm.inception_score(f_gen["logits_unbiased"], splits=ISC_SPLITS)
    assert fid > 0 and reference["frechet_inception_distance"] > 0
    assert _close(fid, reference["frechet_inception_distance"]), (fid, reference)
    assert _close(kid["kid_mean"], reference["kernel_inception_distance_mean"]), (kid, reference)
    assert _close(kid["kid_std"], reference["kernel_inception_distance_std"]), (kid, reference)
    assert _close(isc["isc_mean"], reference["inception_score_mean"]), (isc, reference)
    assert _close(isc["isc_std"], reference["inception_score_std"]), (isc, reference)


def test_precision_recall_matches_torch_fidelity(folders, reference):
    _, _, f_gen, f_real = folders
    ours = fm.precision_recall(f_gen["2048"], f_real["2048"], k=3)
    assert ours["precision"] == pytest.approx(reference["precision"], abs=1e-6)
    assert ours["recall"] == pytest.approx(reference["recall"], abs=1e-6)
    # and on the same features with torch-fidelity's own function, blocks smaller than N
    theirs = prc_features_to_metric(f_gen["2048"], f_real["2048"], prc_neighborhood=3, verbose=False)
    blocked = fm.precision_recall(f_gen["2048"], f_real["2048"], k=3, block=5)
    assert (blocked["precision"], blocked["recall"]) == (theirs["precision"], theirs["recall"])


def test_fid_of_a_set_with_itself_is_zero(folders):
    _, _, f_gen, _ = folders
    stats = fm.frechet_stats(f_gen["2048"])
    fid_self = fm.frechet_distance(stats, stats)
    fid_other = fm.frechet_distance(stats, fm.frechet_stats(folders[3]["2048"]))
    assert abs(fid_self) < 1e-6 * max(1.0, fid_other) and fid_other > 0


@pytest.mark.parametrize("n_gen,n_real", [(200, 150), (200, 10), (5, 9)])
def test_frechet_factorisation_equals_torch_fidelity_formula(n_gen, n_real):
    """Both covariance-factor branches (N > D: eigh factor; N <= D: centred features) give
    torch-fidelity's eigvals-based FID on small D (where its formula is cheap)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    g = torch.Generator().manual_seed(n_gen + n_real)
    a, b = torch.randn(n_gen, 16, generator=g), 1.3 * torch.randn(n_real, 16, generator=g) + 0.2
    theirs = fid_statistics_to_metric(fid_features_to_statistics(a), fid_features_to_statistics(b), verbose=False)
    ours = fm.frechet_distance(fm.frechet_stats(a), fm.frechet_stats(b))
    assert _close(ours, theirs["frechet_inception_distance"], rel=1e-6)


def test_random_inception_features_are_informative(folders):
    """The stand-in weights must not collapse (features vary across images)."""
    _, _, f_gen, _ = folders
    assert f_gen["2048"].shape == (N, 2048) and f_gen["logits_unbiased"].shape == (N, 1008)
    assert torch.isfinite(f_gen["2048"]).all()
    assert (f_gen["2048"].std(0).mean() / f_gen["2048"].abs().mean()) > 1e-3
