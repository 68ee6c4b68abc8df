"""The `simple-ddpm` console command: sample from a pipeline, measure its bits/dim and Frechet distance, push it
to the Hub.

    simple-ddpm sample MODEL [--output grid.png | --output folder/] [--num-images 16] [--num-inference-steps 1000]
        [--seed 0] [--scheduler ddpm|ddim|dpm++] [--eta E] [--timestep-spacing optimal] [--trajectory trajectory.png]
        [--variance-type fixed_small|fixed_large|analytic]
    simple-ddpm elbo MODEL DATA [--num-images 256] [--estimator-timesteps K | --num-inference-steps K]
        [--variance-type fixed_small|fixed_large|analytic] [--timestep-spacing linspace|optimal|...] [--batch-size 256]
    simple-ddpm analytic MODEL DATA [--num-images 100]     # the analytic variance table, stored in MODEL
    simple-ddpm fid MODEL_OR_FOLDER REFERENCE [--features inception|CLASSIFIER.safetensors] [--num-images 1000]
        [--num-inference-steps N]
    simple-ddpm push FOLDER USER/NAME [--private] [--token TOKEN] [--keep-card]
    simple-ddpm inpaint | img2img | interpolate ...   (editing with a trained model: see editing_commands.py)

MODEL is a local pipeline folder or a Hub repo id. One name per idea, as in the pipeline's arguments:
`--num-inference-steps` is the number of reverse steps, `--num-images` how many images; `elbo`'s
`--estimator-timesteps K` is the number of stratified timesteps of the bound's estimate. The older spellings
(`sample --steps`, `fid --num-samples`, `elbo --timesteps`) still work and print a deprecation warning.
Bad input ends the command with one line on stderr and exit status 2; a bug still shows its traceback.
"""

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .command_io import (
    DTYPES,
    UsageError,
    add_option,
    forget_notes_before_work,
    image_folder_files,
    load_images,
    load_pipeline,
    note_before_work,
    parse_class,
    pixels_of,
    positive_int,
    read_image,
    start_work,
    write_config_atomically,
    write_images,
    write_text_atomically,
)
from .cpu_threads import configure_cpu_threads
from .editing_commands import add_editing_commands
from .feature_networks import INCEPTION, FeatureNetworkError, load_feature_extractor
from .frechet import FeatureStatistics, StatisticsError, frechet_distance
from .hub import DEFAULT_IGNORE_PATTERNS, HubAccessError, prepare_pipeline_folder, prepare_repo, push_pipeline_folder
from .image_datasets import (
    DatasetInputError,
)
from .image_processing import pixels_to_model_input, to_pixels
from .model_card import METRICS_NAME, is_training_metrics, write_model_card
from .pipeline_simple_ddpm import SAMPLING_PRECISIONS, SimpleDDPMPipeline
from .recommendation import SAMPLING_RECOMMENDATION
from .sample_quality import check_image_format, pixel_statistics, sample_statistics
from .sampling import (
    SAMPLERS,
    SAMPLING_VARIANCE_TYPES,
    TrajectoryRecorder,
    check_sampler_choice,
    evenly_spaced_steps,
    generate_images,
    use_sampler,
)
from .scheduling_simple_ddpm import FIXED_VARIANCE_TYPES, TIMESTEP_SPACINGS, SimpleDDPMScheduler

BOUND_VARIANCE_TYPES = (*FIXED_VARIANCE_TYPES, "analytic")  # a learned variance is the network's, not a choice


def distilled_steps(pipe: SimpleDDPMPipeline) -> int | None:
    """The step count of a distilled student (training/distill.py), or None for any other model."""
    chain = getattr(pipe.scheduler.config, "distilled_timesteps", None)
    return None if chain is None else len(chain)


def choose_sampler(pipe: SimpleDDPMPipeline | None, args: argparse.Namespace) -> float | None:
    """Set the pipeline's scheduler from --scheduler, --timestep-spacing and --variance-type (for this call only:
    the folder is not changed); return the eta to sample with. With no pipeline, the checks that need no model.
    A distilled student samples its own chain, at eta 0 unless --eta says otherwise."""
    choice = (args.scheduler, args.eta, args.timestep_spacing, args.variance_type)
    if pipe is not None and distilled_steps(pipe) is not None:
        if args.scheduler == "dpm++" or args.timestep_spacing is not None or args.variance_type is not None:
            raise UsageError(
                f"{args.model} is a {distilled_steps(pipe)}-step distilled model: it samples its own timesteps "
                "with DDIM; leave --scheduler, --timestep-spacing and --variance-type unset."
            )
        return args.eta
    try:
        return check_sampler_choice(*choice) if pipe is None else use_sampler(pipe, *choice)
    except ValueError as error:
        raise UsageError(str(error)) from None


def sample_labels(pipe: SimpleDDPMPipeline, args: argparse.Namespace) -> tuple[list | None, int | None]:
    """The label of each image, --num-images per --class, and the grid's columns (one row per class when several
    are given), or (None, None) without --class."""
    if args.classes is None:  # --guidance-scale without --class: refused before loading (`sample`)
        return None, None
    if pipe.num_classes is None:
        raise UsageError(f"--class needs a class-conditional model; {args.model} is unconditional.")
    classes = [parse_class(pipe, text) for text in args.classes]
    try:
        for label in classes:
            pipe.class_label_tensor(label, 1)
    except ValueError as error:
        raise UsageError(str(error)) from None
    labels = [label for label in classes for _ in range(args.num_images)]
    return labels, args.num_images if len(classes) > 1 else None


def sample(args: argparse.Namespace) -> None:
    """Image i starts from the generator seeded with seed + i, so it does not depend on the batch size."""
    choose_sampler(None, args)
    if args.classes is None and args.guidance_scale != 0:
        raise UsageError("--guidance-scale needs --class: the class to guide the samples to.")
    pipe = load_pipeline(args.model, args.revision, args.device, args.dtype)
    eta = choose_sampler(pipe, args)
    labels, cols = sample_labels(pipe, args)
    num_images = args.num_images if labels is None else len(labels)
    recorder = None
    args.num_inference_steps = args.num_inference_steps or distilled_steps(pipe) or 1000
    if args.trajectory:
        steps = evenly_spaced_steps(args.num_inference_steps, args.trajectory_steps)
        recorder = TrajectoryRecorder(min(4, num_images), steps)
    try:
        images = generate_images(
            pipe,
            num_images,
            batch_size=args.batch_size,
            seed=args.seed,
            num_inference_steps=args.num_inference_steps,
            eta=eta,
            callback_on_step_end=recorder,
            callback_on_step_end_tensor_inputs=recorder and recorder.tensor_inputs,
            class_labels=labels,
            guidance_scale=args.guidance_scale,
            mixed_precision=args.mixed_precision,
        )
    except ValueError as error:  # a sampler without x0_hat for --trajectory, a bad --eta or --guidance-scale
        raise UsageError(str(error)) from None
    if recorder is not None:
        trajectory = Path(args.trajectory)
        trajectory.parent.mkdir(parents=True, exist_ok=True)
        recorder.grid().save(trajectory)
        steps = recorder.step_indices
        print(f"Wrote x_t and x0_hat of {recorder.num_images} samples after steps {steps} to {trajectory}")

    rows = f", one row per class ({', '.join(args.classes)})" if cols is not None else ""
    write_images(images, args.output, "samples", cols=cols, detail=rows)


def elbo(args: argparse.Namespace) -> None:
    """Bits/dim of the first --num-images images, converted and resized as training does (`to_pixels`).

    Each image gets its own generator (seed + i), hence its own draw of timesteps and noise: the per-image bounds
    are independent, so their standard error covers both the spread over images and, with --estimator-timesteps,
    the Monte Carlo error of the timestep sample. Batching is over the timesteps of one image.
    """
    images = load_images(args.data, args.split, args.image_column, args.num_images)
    pipe = load_pipeline(args.model, args.revision, args.device, args.dtype)
    if distilled_steps(pipe) is not None:
        raise UsageError(
            f"{args.model} is a {distilled_steps(pipe)}-step distilled sampler, not a likelihood model: its network "
            "jumps two teacher steps at a time, so the bound of its one-step posteriors says nothing about its "
            "samples. Measure it with `simple-ddpm fid`, its teacher with `elbo`."
        )
    size, channels = pipe.unet.config.sample_size, pipe.unet.config.in_channels
    if not isinstance(size, int):
        raise UsageError(f"{args.model} has a non-square sample_size {size}; elbo needs square images.")
    T = len(pipe.scheduler)
    K = args.estimator_timesteps
    if K is not None and not 1 <= K <= T - 1:
        raise UsageError(f"--estimator-timesteps must be in [1, {T - 1}] for this model, got {K}.")
    if K is not None and args.num_inference_steps is not None:
        raise UsageError(
            "--estimator-timesteps estimates the T-step bound, --num-inference-steps is the K-step chain's: not both."
        )
    if args.num_inference_steps is not None and not args.num_inference_steps <= T:
        raise UsageError(f"--num-inference-steps must be in [1, {T}] for this model, got {args.num_inference_steps}.")
    changes = {"variance_type": args.variance_type, "timestep_spacing": args.timestep_spacing}
    changes = {key: value for key, value in changes.items() if value is not None}
    if changes:
        try:
            pipe.scheduler = SimpleDDPMScheduler.from_config(pipe.scheduler.config, **changes)
            if args.num_inference_steps is not None:
                pipe.scheduler.set_timesteps(args.num_inference_steps)
        except ValueError as error:
            raise UsageError(str(error)) from None

    bits = []
    for i, image in enumerate(tqdm(images, desc="images")):
        x0 = pixels_to_model_input(torch.tensor(to_pixels(image, channels, size)))[None]
        generator = torch.Generator().manual_seed(args.seed + i)
        out = pipe.elbo(
            x0,
            generator=generator,
            batch_size=args.batch_size,
            num_timesteps=K,
            num_inference_steps=args.num_inference_steps,
        )
        bits.append(out.bits_per_dim.item())

    bits = np.asarray(bits)
    variance = pipe.scheduler.config.variance_type
    if args.num_inference_steps is not None:
        spacing = pipe.scheduler.config.timestep_spacing
        terms = f"the {args.num_inference_steps}-step chain, {spacing} timesteps, {variance} variance"
    elif K:
        terms = f"{K} of {T - 1} stratified timesteps per image"
    else:
        terms = f"all {T} terms"
    if len(bits) > 1:
        error = bits.std(ddof=1) / math.sqrt(len(bits))
        print(f"bits/dim: {bits.mean():.4f} ± {error:.4f} (mean ± standard error over {len(bits)} images; {terms})")
    else:
        print(f"bits/dim: {bits.mean():.4f} (1 image; {terms})")


def analytic(args: argparse.Namespace) -> None:
    """G_t from --num-images training images (`SimpleDDPMPipeline.estimate_analytic_variance`), written into the
    folder's scheduler_config.json; its variance_type stays as it was (as train.py leaves it), so later commands
    sample as before unless given --variance-type analytic. metrics.json and the card record M."""
    folder = Path(args.model).expanduser()
    if not folder.is_dir():
        raise UsageError(
            f"{args.model}: analytic stores the table in the pipeline folder, so MODEL must be a local folder "
            "(download a Hub repo with `huggingface-cli download` first)."
        )
    pipe = load_pipeline(args.model, args.revision, args.device, args.dtype)
    if not isinstance(pipe.scheduler, SimpleDDPMScheduler):
        raise UsageError(f"{args.model} samples with {type(pipe.scheduler).__name__}, not a SimpleDDPMScheduler.")
    if pipe.scheduler.learns_variance:
        raise UsageError(
            f"{args.model} learns its own reverse variance (variance_type="
            f"{pipe.scheduler.config.variance_type!r}); the analytic variance is for fixed-variance models."
        )
    size, channels = pipe.unet.config.sample_size, pipe.unet.config.in_channels
    pixels = pixels_of(load_images(args.data, args.split, args.image_column, args.num_images), channels, size)
    images = pixels_to_model_input(pixels)
    T = len(pipe.scheduler)
    variance_type = pipe.scheduler.config.variance_type
    pipe.set_progress_bar_config(disable=False)
    start = time.perf_counter()
    table = pipe.estimate_analytic_variance(
        images, generator=torch.Generator().manual_seed(args.seed), batch_size=args.batch_size
    )
    seconds = time.perf_counter() - start
    pipe.scheduler = SimpleDDPMScheduler.from_config(pipe.scheduler.config, variance_type=variance_type)
    write_config_atomically(pipe.scheduler, folder / "scheduler")
    metrics_path = folder / METRICS_NAME
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        metrics["analytic_variance"] = {
            "images": len(images),
            "network_calls": len(images) * T,
            "seconds": seconds,
            "variance_type": variance_type,
        }
        write_text_atomically(metrics_path, json.dumps(metrics, indent=2))
        if is_training_metrics(metrics):
            write_model_card(folder)
    print(
        f"Analytic variance from {len(images)} images ({len(images)} x {T} = {len(images) * T:,} network calls, "
        f"{seconds:.0f} s): G_t from {table[0]:.4f} (t = 1) to {table[-1]:.4f} (t = {T}); wrote "
        f"the table into {folder / 'scheduler' / 'scheduler_config.json'}; its variance_type stays "
        f"{variance_type!r}: sample with `--variance-type analytic` to use the table."
    )


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "simple_ddpm" / "fid"


def reference_key(args: argparse.Namespace, extractor, channels: int, size: int) -> str:
    """What identifies a reference set's statistics: the reference (a dataset id, or a folder with the name,
    size and modification time of every file in it), the images taken, and the feature network."""
    path = Path(args.reference).expanduser()
    files = []
    if path.is_dir():
        files = [(str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))]
    key = {
        "reference": str(path.resolve()) if path.exists() else args.reference,
        "files": files,
        "split": args.split,
        "image_column": args.image_column,
        "num_reference": args.num_reference,
        "features": extractor.name,
        "channels": channels,
        "size": size,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def reference_statistics(args: argparse.Namespace, extractor, channels: int, size: int) -> FeatureStatistics:
    """Statistics of REFERENCE: read from an .npz, else from the cache, else measured and cached."""
    if args.reference.endswith(".npz"):
        if not Path(args.reference).expanduser().is_file():
            raise UsageError(f"{args.reference}: no such statistics file.")
        return FeatureStatistics.load(Path(args.reference).expanduser())
    cache = Path(args.cache_dir).expanduser() / f"{reference_key(args, extractor, channels, size)}.npz"
    if cache.is_file():
        print(f"Reference statistics from the cache: {cache}")
        return FeatureStatistics.load(cache)
    images = load_images(args.reference, args.split, args.image_column, args.num_reference)
    pixels = pixels_of(images, channels, size)
    statistics = pixel_statistics(extractor, pixels, batch_size=args.batch_size, desc="reference features")
    statistics.save(cache)
    print(f"Reference statistics of {len(images)} images cached at {cache} (pass it as REFERENCE to reuse)")
    return statistics


def fid(args: argparse.Namespace) -> None:
    """The Frechet distance between samples of a pipeline (or a folder of images) and a reference set."""
    if args.num_images < 2:
        raise UsageError("--num-images must be at least 2: a covariance needs two images.")
    choose_sampler(None, args)
    extractor = load_feature_extractor(args.features, args.device)
    # Inception repeats a grayscale sample's channel; reference images are converted to its 3 channels alike
    channels = extractor.channels
    source = Path(args.model).expanduser()
    if source.is_dir() and not (source / "model_index.json").is_file():
        files = image_folder_files(source)
        if not files:
            raise UsageError(f"{args.model} is neither a pipeline folder (no model_index.json) nor an image folder.")
        start_work()
        images = [read_image(p) for p in files[: args.num_images]]
        size = extractor.image_size or min(images[0].size)
        generated = pixel_statistics(extractor, pixels_of(images, channels, size), batch_size=args.batch_size)
        what = f"{generated.count} images of {args.model}"
    else:
        pipe = load_pipeline(args.model, args.revision, args.device, args.dtype)
        size = pipe.unet.config.sample_size
        check_image_format(extractor, pipe.unet.config.in_channels, size, args.model)
        T = len(pipe.scheduler)
        steps = args.num_inference_steps or distilled_steps(pipe) or T
        if not 1 <= steps <= T:
            raise UsageError(f"--num-inference-steps must be in [1, {T}] for this model, got {steps}.")
        eta = choose_sampler(pipe, args)
        generated = sample_statistics(
            pipe,
            extractor,
            args.num_images,
            batch_size=args.batch_size,
            seed=args.seed,
            num_inference_steps=steps,
            eta=eta,
        )
        variance = f", {args.variance_type} variance" if args.variance_type else ""
        sampler = "the distilled model's DDIM" if distilled_steps(pipe) else args.scheduler
        what = f"{generated.count} samples, {sampler} at {steps} steps{variance}"
    reference = reference_statistics(args, extractor, channels, size)
    distance = frechet_distance(generated, reference)
    print(f"Frechet distance: {distance:.4f} ({extractor.name}; {what}; {reference.count} reference images)")


def push(args: argparse.Namespace) -> None:
    """Checks the folder before the Hub, so that a bad folder leaves no empty repo behind. A trained folder's card
    is written again from its metrics.json, so that its usage snippet loads the repo pushed to."""
    folder = Path(args.folder).expanduser()
    if not folder.is_dir():
        raise UsageError(f"{args.folder} is not a folder.")
    rewrite_card = not args.keep_card and (folder / METRICS_NAME).is_file()
    try:
        if rewrite_card:
            write_model_card(folder, repo_id=args.repo_id)
    except ValueError as error:
        raise UsageError(f"{error} Pass --keep-card to push README.md as it is.") from None
    try:
        prepare_pipeline_folder(folder, args.token, include_code=not args.no_code)
    except ValueError as error:  # not a pipeline folder, no card, or the token in a file
        raise UsageError(str(error)) from None
    repo_id = prepare_repo(args.repo_id, args.token, private=args.private)
    if rewrite_card and repo_id != args.repo_id:  # NAME alone became USER/NAME
        write_model_card(folder, repo_id=repo_id)
    url = push_pipeline_folder(
        folder,
        repo_id,
        args.token,
        commit_message=args.commit_message,
        include_code=not args.no_code,
        ignore_patterns=args.exclude,
    )
    print(f"Pushed {folder} to https://huggingface.co/{repo_id} ({url})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simple-ddpm",
        description="Sample from a SimpleDDPMPipeline, measure its bits/dim and Frechet distance, push it to the Hub.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("model", help="a local pipeline folder or a Hub repo id (USER/NAME)")
    model.add_argument("--revision", help="branch, tag or commit of a Hub repo (default: main)")
    model.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="where the network runs: cuda, cuda:1, cpu, ... (default: cuda when torch sees a GPU, else cpu; "
        "here: %(default)s)",
    )
    model.add_argument("--dtype", choices=list(DTYPES), default="float32", help="dtype of the UNet's weights")
    model.add_argument("--seed", type=int, default=0, help="image i uses the generator seeded with seed + i")

    sampling = argparse.ArgumentParser(add_help=False)
    sampling.add_argument(
        "--scheduler",
        choices=list(SAMPLERS),
        default="ddpm",
        help="; ".join(f"{name}: {what}" for name, (what, _) in SAMPLERS.items()),
    )
    sampling.add_argument("--eta", type=float, help="ddpm and ddim: the noise weight in [0, 1] (DDIM eq. 16)")
    sampling.add_argument(
        "--timestep-spacing",
        choices=TIMESTEP_SPACINGS,
        help="ddpm and ddim: which of the T steps a shorter chain takes (default: the model's); 'optimal': those "
        "of least bound (needs `simple-ddpm analytic` once; on the benchmark it lowered bounds, not FD)",
    )
    sampling.add_argument(
        "--variance-type",
        choices=SAMPLING_VARIANCE_TYPES,
        help="ddpm and ddim: the reverse variance of this call (default: the model's own; the folder is not "
        "changed); 'analytic' needs `simple-ddpm analytic` once",
    )

    sampler = commands.add_parser(
        "sample",
        parents=[model, sampling],
        help="generate images",
        description="Generate images with a pipeline's sampler.",
        epilog=SAMPLING_RECOMMENDATION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sampler.add_argument("--output", default="samples.png", help="a .png file for a grid, else a folder of PNGs")
    sampler.add_argument("--num-images", type=positive_int, default=16, help="images (per --class when given)")
    sampler.add_argument(
        "--class",
        dest="classes",
        action="append",
        metavar="NAME_OR_INDEX",
        help="a class-conditional model: sample this class (a name of the model's class_names, or an index); "
        "repeat for several, one grid row each. Default: p(x), through the no-label token",
    )
    sampler.add_argument(
        "--guidance-scale",
        type=float,
        default=0.0,
        help="w of classifier-free guidance, (1 + w) eps(x, y) - w eps(x, no label); 0: the conditional model",
    )
    sampler.add_argument("--batch-size", type=positive_int, default=16, help="images per pipeline call")
    add_option(
        sampler,
        "--num-inference-steps",
        deprecated="--steps",
        type=positive_int,
        help="reverse steps (default: 1000, all of T, or a distilled model's own count); fewer respaces the chain "
        "exactly, at a cost in quality: which sampler and how many steps, below",
    )
    sampler.add_argument(
        "--trajectory", help="also write a PNG of x_t and x0_hat of the first 4 samples along the chain"
    )
    sampler.add_argument("--trajectory-steps", type=positive_int, default=8, help="columns of --trajectory")
    sampler.add_argument(
        "--mixed-precision",
        choices=SAMPLING_PRECISIONS,
        default="auto",
        help="autocast of the UNet's calls: no, bf16, or auto, the faster of the two as measured here for this UNet "
        "and batch (cached per machine)",
    )
    sampler.set_defaults(run=sample)

    frechet = commands.add_parser(
        "fid", parents=[model, sampling], help="Frechet distance of samples (or an image folder) to a reference"
    )
    frechet.add_argument("reference", help="a folder of images, a datasets save_to_disk folder or id, or an .npz")
    frechet.add_argument(
        "--features",
        default=INCEPTION,
        help="'inception' (FID; needs simple-ddpm[fid]) or a FeatureClassifier .safetensors file",
    )
    add_option(
        frechet,
        "--num-images",
        deprecated="--num-samples",
        type=positive_int,
        default=1000,
        help="samples drawn (or images of a folder read) and measured (default: 1000)",
    )
    frechet.add_argument(
        "--num-inference-steps", type=positive_int, help="reverse steps per sample (default: every training step)"
    )
    frechet.add_argument("--batch-size", type=positive_int, default=64, help="images per network call")
    frechet.add_argument("--split", default="test", help="split of a reference dataset (default: test)")
    frechet.add_argument("--image-column", help="default: the only column of Image type")
    frechet.add_argument("--num-reference", type=positive_int, help="the first N reference images (default: all)")
    frechet.add_argument("--cache-dir", default=str(default_cache_dir()), help="where reference statistics are kept")
    frechet.set_defaults(run=fid)

    bound = commands.add_parser("elbo", parents=[model], help="bits/dim of the variational bound on images")
    bound.add_argument("data", help="a folder of images, a datasets save_to_disk folder, or a datasets id")
    bound.add_argument("--split", default="test", help="split of a dataset (default: test)")
    bound.add_argument("--image-column", help="default: the only column of Image type")
    bound.add_argument("--num-images", type=positive_int, default=256, help="the first N images")
    add_option(
        bound,
        "--estimator-timesteps",
        deprecated="--timesteps",
        type=positive_int,
        metavar="K",
        help="estimate the bound from K of the T - 1 denoising terms per image, one drawn from each of K "
        "stratified blocks (unbiased; pipe.elbo's num_timesteps). Default: exact, all T terms",
    )
    bound.add_argument(
        "--num-inference-steps",
        type=positive_int,
        metavar="K",
        help="the exact bound of the K-step chain that `sample --num-inference-steps K` draws from",
    )
    bound.add_argument(
        "--variance-type",
        choices=BOUND_VARIANCE_TYPES,
        help="reverse variance (default: the model's own); 'analytic' with --timestep-spacing optimal gave the "
        "lowest K-step bounds on the benchmark",
    )
    bound.add_argument(
        "--timestep-spacing", choices=TIMESTEP_SPACINGS, help="of the K-step chain (default: the model's)"
    )
    bound.add_argument("--batch-size", type=positive_int, default=256, help="timesteps per network call")
    bound.set_defaults(run=elbo)

    estimate = commands.add_parser(
        "analytic",
        parents=[model],
        help="estimate the analytic reverse variance (Bao et al. 2022) from training images and store its table in "
        "the pipeline folder, whose variance_type stays as it is: `--variance-type analytic` of sample, fid and "
        "elbo then uses it (a far better bound of 10-100-step chains; docs/fast-sampling.md)",
    )
    estimate.add_argument("data", help="training images: a folder, a datasets save_to_disk folder, or a datasets id")
    estimate.add_argument("--split", default="train", help="split of a dataset (default: train)")
    estimate.add_argument("--image-column", help="default: the only column of Image type")
    estimate.add_argument(
        "--num-images", type=positive_int, default=100, help="M: the first M images; costs M x T network calls"
    )
    estimate.add_argument("--batch-size", type=positive_int, default=256, help="(image, timestep) pairs per call")
    estimate.set_defaults(run=analytic)

    share = commands.add_parser("push", help="upload a trained pipeline folder with its model card to the Hub")
    share.add_argument("folder", help="trained by training/train.py, or saved with a card as README.md")
    share.add_argument("repo_id", help="USER/NAME or ORG/NAME; created if missing")
    share.add_argument("--private", action="store_true", help="create the repo private")
    share.add_argument("--token", help="default: HF_TOKEN, then the stored login (preferred: not in shell history)")
    share.add_argument("--commit-message", default="Upload SimpleDDPMPipeline")
    share.add_argument("--no-code", action="store_true", help="do not add the pipeline code for trust_remote_code")
    share.add_argument(
        "--keep-card", action="store_true", help="push README.md as it is, instead of writing it from metrics.json"
    )
    share.add_argument(
        "--exclude",
        nargs="*",
        help=f"glob patterns not to upload (default: {' '.join(DEFAULT_IGNORE_PATTERNS)}; none: upload everything)",
    )
    share.set_defaults(run=push)

    add_editing_commands(commands, model)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `simple-ddpm`; returns the exit status."""
    args = build_parser().parse_args(argv)
    if getattr(args, "device", None) == "cpu":
        note_before_work(f"simple-ddpm {args.command}: {configure_cpu_threads().describe()}")
    try:
        args.run(args)
    except (UsageError, DatasetInputError, HubAccessError, FeatureNetworkError, StatisticsError) as error:
        print(f"simple-ddpm {args.command}: error: {error}", file=sys.stderr)
        return 2
    finally:
        forget_notes_before_work()
    return 0


if __name__ == "__main__":
    sys.exit(main())
