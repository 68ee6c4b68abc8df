"""--fid_every: the Frechet distance of the EMA model's samples to the held-out images during training (and
distill.py's --fid_num_samples: the student's and its teacher's at the end).

The feature network is loaded and checked before the first training step, and the held-out images' statistics
are computed once; every evaluation then samples --fid_num_samples images (the same seeds each time, so that
values over training compare) with --periodic_inference_steps of DDPM, the steps of the grids written during
training (default min(100, T)), at the end too, so that the last value compares with the earlier ones.
"""

from dataclasses import dataclass

import torch

from simple_ddpm import SimpleDDPMPipeline
from simple_ddpm.feature_networks import FeatureNetworkError, load_feature_extractor
from simple_ddpm.frechet import FeatureStatistics, frechet_distance
from simple_ddpm.sample_quality import check_image_format, pixel_statistics, sample_statistics
from training.arguments import InvalidTrainingInput


@dataclass
class FrechetEvaluation:
    extractor: object
    reference: FeatureStatistics
    num_samples: int
    num_inference_steps: int
    batch_size: int
    seed: int

    @classmethod
    def prepare(cls, args, held_out: torch.Tensor, device: torch.device) -> "FrechetEvaluation | None":
        """None without --fid_every; else the feature network and the held-out images' statistics."""
        if not args.fid_every:
            return None
        return cls.load(
            args.fid_features,
            held_out,
            device,
            num_samples=args.fid_num_samples,
            num_inference_steps=args.periodic_inference_steps,
            batch_size=args.eval_batch_size,
            seed=args.seed,
        )

    @classmethod
    def load(
        cls, features: str, held_out: torch.Tensor, device, *, num_samples, num_inference_steps, batch_size, seed
    ) -> "FrechetEvaluation":
        """The feature network `features` (checked against the images) and the statistics of `held_out`; a
        problem with either is an `InvalidTrainingInput`."""
        try:
            extractor = load_feature_extractor(features, device)
            check_image_format(extractor, held_out.shape[1], held_out.shape[2], "the training data")
        except FeatureNetworkError as error:
            raise InvalidTrainingInput(f"--fid_features: {error}") from None
        if len(held_out) < 2:
            raise InvalidTrainingInput("The Frechet distance needs at least 2 held-out images as the reference.")
        reference = pixel_statistics(extractor, held_out, batch_size=batch_size, progress=False)
        return cls(extractor, reference, num_samples, num_inference_steps, batch_size, seed)

    def __call__(
        self,
        pipe: SimpleDDPMPipeline,
        progress: bool = False,
        num_inference_steps: int | None = None,
        eta: float | None = None,
    ) -> float:
        """The distance of `pipe`'s samples, at `num_inference_steps` (default: this evaluation's)."""
        samples = sample_statistics(
            pipe,
            self.extractor,
            self.num_samples,
            batch_size=self.batch_size,
            seed=self.seed,
            num_inference_steps=num_inference_steps or self.num_inference_steps,
            eta=eta,
            progress=progress,
        )
        return frechet_distance(samples, self.reference)

    def describe(self, value: float, num_inference_steps: int | None = None) -> dict:
        """The entry of metrics.json."""
        return {
            "value": value,
            "features": self.extractor.name,
            "num_samples": self.num_samples,
            "num_inference_steps": num_inference_steps or self.num_inference_steps,
            "reference_images": self.reference.count,
        }
