"""The Frechet distance against closed forms and scipy's matrix square root; feature networks, offline."""

import sys
import types
import urllib.error

import numpy as np
import pytest
import scipy.linalg
import torch
from safetensors.torch import save_file

from simple_ddpm.feature_networks import (
    FeatureClassifier,
    FeatureNetworkError,
    InceptionFeatures,
    inception_weights,
    load_feature_classifier,
    load_feature_extractor,
    save_feature_classifier,
)
from simple_ddpm.frechet import FeatureStatistics, StatisticsError, frechet_distance


def random_features(n, d, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * scale + rng.normal(size=d)


def scipy_frechet(a: FeatureStatistics, b: FeatureStatistics) -> float:
    """The formula as TTUR and pytorch-fid write it, with scipy.linalg.sqrtm of the non-symmetric product."""
    covmean = scipy.linalg.sqrtm(a.sigma @ b.sigma).real
    return float(np.sum((a.mu - b.mu) ** 2) + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.trace(covmean))


def statistics(mu, sigma, name="f"):
    return FeatureStatistics(np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64), 100, name)


# --- the distance --------------------------------------------------------------------------------------------


def test_identical_sets_are_at_distance_zero():
    a = FeatureStatistics.of(random_features(200, 16), "f")
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-9)


def test_diagonal_covariances_give_the_sum_of_squared_differences_of_standard_deviations():
    var_a, var_b = np.array([1.0, 4.0, 0.25, 9.0]), np.array([2.0, 1.0, 0.5, 9.0])
    mu_a, mu_b = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, -1.0])
    expected = np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2) + np.sum((mu_a - mu_b) ** 2)
    distance = frechet_distance(statistics(mu_a, np.diag(var_a)), statistics(mu_b, np.diag(var_b)))
    assert distance == pytest.approx(expected, rel=1e-12)


def test_a_pure_mean_shift_gives_the_squared_shift():
    features = random_features(300, 8)
    shift = np.linspace(-1, 2, 8)
    a, b = FeatureStatistics.of(features, "f"), FeatureStatistics.of(features + shift, "f")
    np.testing.assert_allclose(b.sigma, a.sigma, atol=1e-12)
    assert frechet_distance(a, b) == pytest.approx(np.sum(shift**2), rel=1e-9)


def test_proportional_covariances_give_the_closed_form():
    # S_b = c S_a: tr((S_a S_b)^(1/2)) = sqrt(c) tr(S_a), so FD = (1 - sqrt(c))^2 tr(S_a)
    a = FeatureStatistics.of(random_features(100, 10), "f")
    b = statistics(a.mu, 3.0 * a.sigma)
    assert frechet_distance(a, b) == pytest.approx((1 - np.sqrt(3.0)) ** 2 * np.trace(a.sigma), rel=1e-9)


@pytest.mark.parametrize("n,d", [(50, 2), (80, 5), (200, 32), (20, 32)])  # the last: singular covariances
def test_distance_matches_scipy_sqrtm(n, d):
    a = FeatureStatistics.of(random_features(n, d, seed=1), "f")
    b = FeatureStatistics.of(random_features(n, d, seed=2, scale=0.7), "f")
    assert frechet_distance(a, b) == pytest.approx(scipy_frechet(a, b), rel=1e-6)


def test_statistics_are_the_float64_mean_and_unbiased_covariance():
    features = random_features(40, 6).astype(np.float32)
    s = FeatureStatistics.of(features, "f")
    x = features.astype(np.float64)
    centred = x - x.sum(0) / len(x)
    assert s.mu.dtype == s.sigma.dtype == np.float64
    np.testing.assert_allclose(s.sigma, centred.T @ centred / (len(x) - 1), rtol=1e-12)
    assert s.count == 40


def test_statistics_round_trip_through_npz_and_refuse_other_files(tmp_path):
    s = FeatureStatistics.of(random_features(30, 4), "classifier-sha256:abc")
    s.save(tmp_path / "ref.npz")
    loaded = FeatureStatistics.load(tmp_path / "ref.npz")
    np.testing.assert_array_equal(loaded.sigma, s.sigma)
    assert (loaded.count, loaded.features) == (30, "classifier-sha256:abc")
    (tmp_path / "bad.npz").write_text("not numpy")
    with pytest.raises(StatisticsError, match="is not a statistics file"):
        FeatureStatistics.load(tmp_path / "bad.npz")


def test_distance_across_feature_networks_is_refused():
    a = FeatureStatistics.of(random_features(30, 4), "inception-v3-compat-2048")
    b = FeatureStatistics.of(random_features(30, 4), "classifier-sha256:abc")
    with pytest.raises(StatisticsError, match="different feature networks"):
        frechet_distance(a, b)


# --- feature networks ----------------------------------------------------------------------------------------


def tiny_classifier(seed=0):
    torch.manual_seed(seed)
    return FeatureClassifier(in_channels=3, image_size=8, num_classes=4, widths=[4, 8], feature_dim=6)


def test_classifier_file_round_trips_weights_config_and_features(tmp_path):
    model = tiny_classifier()
    save_feature_classifier(model, tmp_path / "c.safetensors")
    loaded = load_feature_classifier(tmp_path / "c.safetensors")
    assert loaded.config == model.config
    images = torch.rand(5, 3, 8, 8)
    torch.testing.assert_close(loaded.features(images), model.features(images), rtol=0, atol=0)
    extractor = load_feature_extractor(str(tmp_path / "c.safetensors"))
    pixels = (images * 255).round().to(torch.uint8)
    np.testing.assert_allclose(extractor(pixels), model.features(pixels.float() / 255).double().detach().numpy())
    assert extractor.name.startswith("classifier-sha256:") and (extractor.channels, extractor.image_size) == (3, 8)


def test_classifier_features_are_the_penultimate_layer():
    model = tiny_classifier()
    images = torch.rand(3, 3, 8, 8)
    torch.testing.assert_close(model(images), model.head(model.features(images)))


def test_bad_classifier_files_are_refused_in_one_line(tmp_path):
    with pytest.raises(FeatureNetworkError, match="no such file"):
        load_feature_classifier(tmp_path / "missing.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(FeatureNetworkError, match="is not a safetensors file"):
        load_feature_classifier(tmp_path / "garbage.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"format": "pt"})
    with pytest.raises(FeatureNetworkError, match="format='pt', expected 'simple-ddpm-feature-classifier'"):
        load_feature_classifier(tmp_path / "other.safetensors")


def test_inception_without_torch_fidelity_names_the_missing_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", None)  # import fails
    with pytest.raises(FeatureNetworkError, match=r"need torch-fidelity.*pip install -e '\.\[fid\]'"):
        InceptionFeatures()


def refuse_download(url, dst, *args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_inception_weights_download_failure_names_the_file_and_where_to_put_it(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse_download)
    url = "https://example.org/releases/weights-inception-2015-12-05-6726825d.pth"
    with pytest.raises(FeatureNetworkError) as error:
        inception_weights(url, hub_dir=tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert url in message and str(tmp_path / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth") in message
    # a file put there is used without a download
    (tmp_path / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth").write_bytes(b"weights")
    assert inception_weights(url, hub_dir=tmp_path).read_bytes() == b"weights"


def test_inception_features_offline_end_in_the_download_message(monkeypatch, tmp_path):
    # torch-fidelity needs torchvision, absent here: a stand-in module with its URL constant and class name
    fake = types.ModuleType("torch_fidelity.feature_extractor_inceptionv3")
    fake.URL_INCEPTION_V3 = "https://example.org/weights-inception-2015-12-05-6726825d.pth"
    fake.FeatureExtractorInceptionV3 = lambda *args, **kwargs: pytest.fail("built without weights")
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", fake)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse_download)
    with pytest.raises(FeatureNetworkError, match="Could not download the Inception-v3 FID weights"):
        InceptionFeatures()
