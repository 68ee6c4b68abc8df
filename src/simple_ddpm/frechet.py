"""The Frechet distance between two sets of images in a feature space (Heusel et al. 2017), and saved statistics.

FD = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2)), the 2-Wasserstein distance between the Gaussians
N(mu_1, S_1) and N(mu_2, S_2) fitted to the two sets of features. With Inception-v3's 2048 pool features it is
FID. The mean and covariance are float64; the covariance is the unbiased one (ddof = 1), as in the reference
implementations (TTUR, pytorch-fid, torch-fidelity).

A set's statistics are saved as an .npz with `mu`, `sigma`, `count` and `features` (the name of the feature
network), so that a reference set is measured once and a distance is never taken across feature networks.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class StatisticsError(ValueError):
    """Statistics that cannot be used: unreadable, or of another feature network. One line."""


@dataclass
class FeatureStatistics:
    """Mean `mu` (D,) and covariance `sigma` (D, D) of `count` feature vectors from the network named `features`."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int
    features: str

    @classmethod
    def of(cls, features: np.ndarray, name: str) -> "FeatureStatistics":
        """Mean and unbiased covariance, in float64, of the rows of `features` (N, D), N >= 2."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"Need at least 2 feature vectors of shape (N, D), got shape {features.shape}.")
        return cls(features.mean(0), np.cov(features, rowvar=False, ddof=1), len(features), name)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial.npz")  # np.savez adds .npz to a name without it
        np.savez(partial, mu=self.mu, sigma=self.sigma, count=self.count, features=self.features)
        partial.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStatistics":
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls(data["mu"], data["sigma"], int(data["count"]), str(data["features"]))
        except (OSError, ValueError, KeyError) as error:
            raise StatisticsError(
                f"{path} is not a statistics file (an .npz with mu, sigma, count, features): {error}"
            ) from None


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S_1 S_2)^(1/2)) for symmetric positive semi-definite S_1, S_2.

    S_1 S_2 is similar to S_1^(1/2) S_2 S_1^(1/2), which is symmetric PSD: its square root's trace is the sum of
    the square roots of its eigenvalues. Symmetric eigendecompositions are stable where sqrtm of the non-symmetric
    product is not (no complex parts to discard); rounding's tiny negative eigenvalues are taken as 0.
    """
    values, vectors = np.linalg.eigh(sigma1)
    sqrt_sigma1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum())


def frechet_distance(a: FeatureStatistics, b: FeatureStatistics) -> float:
    """|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)) (Heusel et al. 2017, eq. 6)."""
    if a.features != b.features:
        raise StatisticsError(
            f"The two sets were measured with different feature networks ({a.features} and {b.features}); "
            "measure both with the same one."
        )
    if a.mu.shape != b.mu.shape:
        raise StatisticsError(f"Feature sizes differ: {a.mu.shape[0]} and {b.mu.shape[0]}.")
    mean_term = float(np.sum((a.mu - b.mu) ** 2))
    covariance_term = float(np.trace(a.sigma) + np.trace(b.sigma)) - 2 * trace_sqrt_product(a.sigma, b.sigma)
    return mean_term + max(covariance_term, 0.0)
