"""Command-line options of training/train.py, and their validation in one place.

Problems that the options alone reveal end the run through `parser.error` (usage and one line, exit status 2);
problems that need the data or the model (a dataset without images, a resolution the UNet cannot halve) raise
`InvalidTrainingInput`, which train.py reports as one line before any training step.
"""

import argparse
import math
import os
import warnings
from pathlib import Path

from accelerate.utils import is_wandb_available
from diffusers.optimization import SchedulerType

from simple_ddpm.hardware import MIXED_PRECISIONS
from simple_ddpm.scheduling_simple_ddpm import (
    BETA_SCHEDULES,
    LEARNED_VARIANCE_TYPES,
    LOSS_WEIGHTINGS,
    PREDICTION_TYPES,
    VARIANCE_TYPES,
)
from simple_ddpm.timestep_samplers import LOG_NORMAL_MEAN, LOG_NORMAL_STD, TIMESTEP_SAMPLINGS
from simple_ddpm.training_losses import DEFAULT_VLB_WEIGHT, LOSS_TYPES
from training.recipes import DEFAULT_RECIPE, RECIPE_PURPOSES, RECIPES

MODEL_PRESETS = ("tiny", "small", "ddpm-cifar10")
# With no data option, the run trains on scikit-learn's digits for this many steps (the README's quickstart).
QUICKSTART_TRAIN_STEPS = 2000
# Peak AdamW learning rate by --model_preset: the tiny UNet's rate is the one of least held-out bits/dim on the
# digits among those tried (benchmarks/RESULTS.md, how the steps and learning rate were chosen); on Fashion-MNIST
# at one epoch it draws a third less FD than 1e-3 at 0.18 bits/dim less, two seeds (RESULTS.md, "The learning
# rate and EMA at one epoch").
DEFAULT_LEARNING_RATES = {"tiny": 3e-3}
DEFAULT_LEARNING_RATE = 1e-3


class InvalidTrainingInput(ValueError):
    """Bad data, model or checkpoint input, found before training; train.py prints it as one line."""


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return value


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The data options, which training/distill.py shares."""
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset_name",
        help="A Hub dataset id, a local dataset folder (imagefolder, parquet, ...) that `load_dataset` reads, or "
        "a folder written by `Dataset.save_to_disk`. Default: scikit-learn's 8x8 digits, no network needed.",
    )
    data.add_argument("--dataset_config_name", help="The dataset's configuration name, if it has several.")
    data.add_argument("--train_data_dir", help="A local folder of images (read with the imagefolder builder).")
    data.add_argument("--cache_dir", help="Where `datasets` caches downloads and preprocessed data.")
    data.add_argument("--image_column", help="The column holding the images; found automatically if only one is.")
    data.add_argument(
        "--class_column",
        help="Train a class-conditional model on this ClassLabel or integer column ('auto': the dataset's only "
        "ClassLabel column; the default digits have one). The UNet gets num_class_embeds = classes + 1, the last "
        "being the no-label token of classifier-free guidance. Default: unconditional.",
    )
    data.add_argument(
        "--class_dropout",
        type=float,
        help="With --class_column, the probability that a training image's label is replaced by the no-label "
        "token, so that one network learns p(x | y) and p(x) (Ho & Salimans 2022). Default: 0.1.",
    )
    data.add_argument("--split", default="train", help="The split to train on.")
    data.add_argument("--eval_split", help="The held-out split for the bits/dim; default: hold out --eval_fraction.")
    data.add_argument(
        "--eval_fraction",
        type=fraction,
        default=0.1,
        help="Without --eval_split, the fraction of --split held out for evaluation (a seeded split). With "
        "--streaming, the stream's first --num_eval_images images are held out instead.",
    )
    data.add_argument("--max_train_samples", type=positive_int, help="Train on at most this many images.")
    data.add_argument(
        "--streaming",
        action="store_true",
        help="Read the dataset as a stream (for data larger than memory or disk); images are decoded on the fly.",
    )
    data.add_argument(
        "--shuffle_buffer_size", type=positive_int, default=1000, help="With --streaming, the shuffle buffer."
    )
    data.add_argument(
        "--resolution",
        type=positive_int,
        help="Image size. Default: the model config's sample_size, else the shorter side of the first image, if "
        "that is at most 64 pixels (above, the run stops and asks for --resolution).",
    )
    data.add_argument(
        "--crop",
        choices=("center", "random"),
        default="center",
        help="After resizing the shorter side to --resolution, crop the longer side at the center or at random.",
    )
    data.add_argument("--random_flip", action="store_true", help="Flip training images horizontally at random.")
    data.add_argument(
        "--num_channels",
        type=int,
        choices=(1, 3, 4),
        help="Channels the model sees. Default: the model config's, else 1 if the images are grayscale, else 3.",
    )
    data.add_argument(
        "--preprocessing_num_workers", type=positive_int, help="Processes that decode and resize the images once."
    )


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """The checkpoint options, which training/distill.py shares."""
    checkpoints = parser.add_argument_group("checkpoints")
    checkpoints.add_argument(
        "--checkpointing_steps",
        type=non_negative_int,
        default=1000,
        help="Save the training state every N steps; 0: never.",
    )
    checkpoints.add_argument(
        "--checkpoints_total_limit", type=positive_int, default=2, help="Keep at most this many checkpoints."
    )
    checkpoints.add_argument(
        "--resume_from_checkpoint",
        help='Continue from a checkpoint folder, or "latest" (the newest in OUTPUT_DIR, or a fresh start if none).',
    )


def add_hub_arguments(parser: argparse.ArgumentParser, push_help: str) -> None:
    """--push_to_hub and the repo it pushes to (train.py and distill.py)."""
    hub = parser.add_argument_group("sharing on the Hugging Face Hub")
    hub.add_argument("--push_to_hub", action="store_true", help=push_help)
    hub.add_argument("--hub_model_id", help='The repo, "USER/NAME" or "ORG/NAME"; created if missing.')
    hub.add_argument("--hub_private_repo", action="store_true", help="Create the repo private.")
    hub.add_argument(
        "--hub_token",
        help="Default: HF_TOKEN, then the stored login (`hf auth login`), which keep it out of the process list.",
    )


def check_hub_options(args: argparse.Namespace) -> None:
    if args.push_to_hub and not args.hub_model_id:
        raise InvalidTrainingInput("--push_to_hub needs --hub_model_id USER/NAME.")
    hub_options = [name for name in ("hub_model_id", "hub_private_repo", "hub_token") if getattr(args, name)]
    if hub_options and not args.push_to_hub:
        raise InvalidTrainingInput(f"--{hub_options[0]} needs --push_to_hub.")
    if args.hub_token and args.report_to == "wandb":  # wandb records the command line
        raise InvalidTrainingInput("--hub_token would be recorded by wandb; set HF_TOKEN or run `hf auth login`.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train a UNet2DModel with SimpleDDPMScheduler and save a SimpleDDPMPipeline. With no data "
        "option it trains on scikit-learn's 8x8 digits (the quickstart).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_data_arguments(parser)

    model = parser.add_argument_group("model and objective")
    model.add_argument(
        "--recipe",
        choices=list(RECIPES),
        default=DEFAULT_RECIPE,
        help="Defaults of --prediction_type, --loss_weighting, --snr_gamma, --beta_schedule and "
        "--timestep_sampling, each measured on the package's Fashion-MNIST benchmark (docs/results.md, training "
        "recipes): "
        + "; ".join(f"{name}: {recipe_text(name)} ({RECIPE_PURPOSES[name]})" for name in RECIPES)
        + ". Options given explicitly override the recipe's.",
    )
    model.add_argument(
        "--model_preset",
        choices=MODEL_PRESETS,
        default="tiny",
        help="UNet size; ddpm-cifar10 is the 35.7M-parameter network of Ho et al. for 32x32 images.",
    )
    model.add_argument(
        "--model_config_name_or_path",
        help="A UNet2DModel config .json (random init), or a pretrained UNet or pipeline folder or Hub id to "
        "fine-tune. Overrides --model_preset.",
    )
    model.add_argument(
        "--prediction_type", choices=PREDICTION_TYPES, help="What the UNet predicts. --recipe sets its default."
    )
    model.add_argument(
        "--loss_weighting",
        choices=LOSS_WEIGHTINGS,
        help="Per-timestep loss weight: simple (Ho et al.'s L_simple), elbo (the true bound), min_snr (Hang et al. "
        "2023: min(SNR, gamma) on the x_0 error), p2 (Choi et al. 2022: 1 / (k + SNR)^gamma on the noise error). "
        "--recipe sets its default.",
    )
    model.add_argument("--snr_gamma", type=float, help="Gamma of --loss_weighting min_snr. --recipe sets its default.")
    model.add_argument("--p2_gamma", type=float, default=1.0, help="Gamma of --loss_weighting p2.")
    model.add_argument("--p2_k", type=float, default=1.0, help="k of --loss_weighting p2 (positive).")
    model.add_argument("--beta_schedule", choices=BETA_SCHEDULES, help="Noise schedule. --recipe sets its default.")
    model.add_argument("--num_train_timesteps", type=positive_int, default=1000, help="T, the diffusion length.")
    model.add_argument(
        "--variance_type",
        choices=VARIANCE_TYPES,
        default="fixed_small",
        help="Reverse-process variance: fixed (fixed_small, fixed_large), or learned by a UNet with twice the "
        "output channels (learned_range, learned; Nichol & Dhariwal 2021).",
    )
    model.add_argument(
        "--loss_type",
        choices=LOSS_TYPES,
        default="mse",
        help="mse: the prediction's MSE weighted by --loss_weighting, plus --vlb_weight x L_vlb for a learned "
        "variance (L_hybrid); vlb: the bound's terms L_vlb alone, through mean and variance.",
    )
    model.add_argument(
        "--vlb_weight",
        type=float,
        help=f"lambda of L_hybrid = MSE + lambda L_vlb, with a learned variance and --loss_type mse. Default: "
        f"{DEFAULT_VLB_WEIGHT}.",
    )
    model.add_argument(
        "--timestep_sampling",
        choices=TIMESTEP_SAMPLINGS,
        help="uniform; importance: p_t proportional to the RMS of the last 10 losses at t, each loss weighted by "
        "1 / (T p_t), so the objective is unchanged (Nichol & Dhariwal 2021, eq. 18); log_normal: ln sigma_t ~ "
        "N(--log_normal_mean, --log_normal_std^2) with sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), weights 1, "
        "so each timestep's loss counts T p_t times (EDM's noise distribution, Karras et al. 2022). --recipe sets "
        "its default.",
    )
    model.add_argument(
        "--log_normal_mean",
        type=float,
        help=f"--timestep_sampling log_normal: the mean of ln sigma. Default: EDM's {LOG_NORMAL_MEAN}.",
    )
    model.add_argument(
        "--log_normal_std",
        type=float,
        help=f"--timestep_sampling log_normal: the std of ln sigma, > 0. Default: EDM's {LOG_NORMAL_STD}.",
    )

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--train_batch_size", type=positive_int, default=128, help="Images per step per process.")
    optim.add_argument(
        "--max_train_steps",
        type=positive_int,
        help=f"Optimizer steps. Default: the quickstart's {QUICKSTART_TRAIN_STEPS} unless --num_epochs is given (with "
        "other data than the quickstart's, a warning says so); with both, training stops at whichever comes first.",
    )
    optim.add_argument("--num_epochs", type=positive_int, help="Passes over the training set.")
    optim.add_argument(
        "--gradient_accumulation_steps", type=positive_int, default=1, help="Batches per optimizer step."
    )
    optim.add_argument(
        "--learning_rate",
        type=float,
        help=f"Peak learning rate of AdamW. Default: {DEFAULT_LEARNING_RATES['tiny']:g} for the tiny preset, else "
        f"{DEFAULT_LEARNING_RATE:g}.",
    )
    optim.add_argument(
        "--lr_scheduler",
        choices=[kind.value for kind in SchedulerType],
        default="cosine",
        help="Learning-rate schedule after warmup (diffusers.optimization.get_scheduler).",
    )
    optim.add_argument("--lr_warmup_steps", type=non_negative_int, default=200, help="Linear warmup steps.")
    optim.add_argument("--adam_beta1", type=float, default=0.9, help="AdamW's first-moment decay.")
    optim.add_argument("--adam_beta2", type=float, default=0.999, help="AdamW's second-moment decay.")
    optim.add_argument("--adam_weight_decay", type=float, default=0.0, help="AdamW's decoupled weight decay.")
    optim.add_argument("--adam_epsilon", type=float, default=1e-8, help="AdamW's denominator epsilon.")
    optim.add_argument(
        "--max_grad_norm", type=float, default=1.0, help="Clip the gradient norm to this; 0 turns clipping off."
    )
    optim.add_argument(
        "--mixed_precision",
        choices=MIXED_PRECISIONS,
        default="auto",
        help="Autocast precision. auto: what `accelerate launch --mixed_precision` or `accelerate config` chose; "
        "else a resumed checkpoint's; else on a CUDA GPU bf16 where native (Ampere on); on a CPU with native bf16 "
        "(AVX512-BF16 or AMX) the faster of no and bf16 as measured at start-up on a few forward and backward "
        "passes of this UNet at this batch (cached per machine); else no.",
    )
    optim.add_argument(
        "--fused_adamw",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="AdamW as one fused kernel for all weights (torch's fused=True) where torch has one for the device.",
    )
    optim.add_argument(
        "--channels_last", action="store_true", help="Keep the UNet's weights and inputs in channels-last layout."
    )
    optim.add_argument(
        "--torch_compile",
        action="store_true",
        help="Compile the UNet with torch.compile (inductor) for training; pays off on GPUs and long runs, costs "
        "minutes of compilation first (benchmarks/RESULTS.md).",
    )
    optim.add_argument("--seed", type=int, default=0, help="Seeds weights, data order, noise and evaluation.")
    optim.add_argument(
        "--use_ema",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Keep an EMA of the weights, used for samples, evaluation and the saved pipeline.",
    )
    optim.add_argument("--ema_max_decay", type=float, default=0.9999, help="Upper limit of the EMA decay.")
    optim.add_argument(
        "--ema_power",
        type=float,
        default=0.75,
        help="EMA warmup: decay = 1 - (1 + step / inv_gamma) ** -power (3/4 for short runs, 2/3 for long).",
    )
    optim.add_argument("--ema_inv_gamma", type=float, default=1.0, help="EMA warmup inverse multiplicative factor.")

    logging = parser.add_argument_group("logging, samples and evaluation")
    logging.add_argument(
        "--output_dir",
        default="outputs/simple-ddpm",
        help="Where the pipeline, samples, metrics, model card and checkpoints go.",
    )
    logging.add_argument(
        "--report_to",
        choices=("tensorboard", "wandb", "none"),
        default="tensorboard",
        help="Tracker for loss, lr, grad norm, images/s, samples and bits/dim (logs under OUTPUT_DIR/logs).",
    )
    logging.add_argument("--logging_steps", type=positive_int, default=10, help="Log training metrics every N steps.")
    logging.add_argument(
        "--sample_every",
        type=non_negative_int,
        default=1000,
        help="Write a sample grid every N steps; 0: only at the end.",
    )
    logging.add_argument("--num_samples", type=positive_int, default=64, help="Images in each sample grid.")
    logging.add_argument(
        "--num_inference_steps",
        type=positive_int,
        help="Reverse steps for the final sample grid. Default: T when its --num_samples x T UNet calls cost at most "
        "a quarter of the training's UNet work (as the exact final bound), else --periodic_inference_steps, or "
        "fewer (at least 10) where those would cost more than that quarter.",
    )
    logging.add_argument(
        "--periodic_inference_steps",
        type=positive_int,
        help="Reverse steps (respaced exactly) for the grids written during training; default: min(100, T). At "
        "100 steps the grids look like those at 1,000 (benchmarks/RESULTS.md) for a tenth of the time.",
    )
    logging.add_argument(
        "--eval_every",
        type=non_negative_int,
        default=2000,
        help="Evaluate the held-out bits/dim every N steps; 0: only at the end.",
    )
    logging.add_argument(
        "--num_eval_images", type=positive_int, default=256, help="Size of the fixed held-out subset evaluated."
    )
    logging.add_argument(
        "--eval_timesteps",
        type=positive_int,
        default=100,
        help="During training, estimate the bound from K timesteps (stratified, the small-t terms exact): "
        "unbiased, about K/T of the exact bound's time. K >= T - 1 computes the exact bound.",
    )
    logging.add_argument(
        "--analytic_images",
        type=non_negative_int,
        help="M training images for the analytic variance's table (Bao et al. 2022; M x T UNet calls), stored in "
        "scheduler_config.json at the end. Default: as many as cost about 10%% of the run's UNet work, at most "
        "100; 0: none. Fixed-variance models only.",
    )
    logging.add_argument(
        "--final_eval_timesteps",
        type=positive_int,
        help="Timesteps for the final bits/dim (K >= T - 1: the exact bound). Default: exact when its T UNet calls "
        "per held-out image cost at most a quarter of the training's UNet work, else the 100-term estimate, or "
        "fewer (at least 10) where 100 would cost more than that quarter.",
    )
    logging.add_argument("--eval_batch_size", type=positive_int, default=256, help="Batch size of the ELBO.")
    logging.add_argument(
        "--fid_every",
        type=non_negative_int,
        default=0,
        help="Frechet distance of samples (--periodic_inference_steps of DDPM) to the held-out images every N steps "
        "and at the end; 0: never.",
    )
    logging.add_argument(
        "--fid_num_samples", type=positive_int, default=256, help="Samples per Frechet distance (at least 2)."
    )
    logging.add_argument(
        "--fid_features",
        default="inception",
        help="'inception' (FID; needs simple-ddpm[fid]) or a feature classifier .safetensors file "
        "(simple_ddpm.feature_networks).",
    )

    add_checkpoint_arguments(parser)

    add_hub_arguments(
        parser,
        "Push to --hub_model_id: write access is checked before training, checkpoints and sample grids are uploaded "
        "in the background, the pipeline with its card and metrics at the end.",
    )
    parser.set_defaults(**RECIPES[DEFAULT_RECIPE])
    return parser


def recipe_text(name: str) -> str:
    """'epsilon, simple, linear' for the help of --recipe."""
    recipe = RECIPES[name]
    weighting = recipe["loss_weighting"]
    if weighting == "min_snr":
        weighting = f"min_snr (gamma {recipe['snr_gamma']:g})"
    sampling = "" if recipe["timestep_sampling"] == "uniform" else f", {recipe['timestep_sampling']} timesteps"
    return f"{recipe['prediction_type']}, {weighting}, {recipe['beta_schedule']}{sampling}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate the options; an invalid combination ends the program with a one-line message. --recipe
    is read first: its values become the defaults of the options it sets."""
    parser = build_parser()
    recipe = parser.parse_known_args(argv)[0].recipe
    parser.set_defaults(**RECIPES[recipe])
    args = parser.parse_args(argv)
    try:
        validate_args(args)
    except InvalidTrainingInput as error:
        parser.error(str(error))
    return args


def validate_args(args: argparse.Namespace) -> None:
    """Checks of the options alone, so that a bad command fails before any data is read."""
    check_data_options(args)
    if args.streaming and args.max_train_steps is None:
        raise InvalidTrainingInput("--streaming needs --max_train_steps: a stream's length is unknown.")
    if args.streaming and not (args.dataset_name or args.train_data_dir):
        raise InvalidTrainingInput("--streaming needs --dataset_name or --train_data_dir.")
    if args.class_dropout is not None and args.class_column is None:
        raise InvalidTrainingInput("--class_dropout needs --class_column.")
    if args.class_column is not None:
        args.class_dropout = 0.1 if args.class_dropout is None else args.class_dropout
        if not 0 <= args.class_dropout < 1:
            raise InvalidTrainingInput(f"--class_dropout must lie in [0, 1), got {args.class_dropout}.")
    if args.max_train_steps is None and args.num_epochs is None:
        args.max_train_steps = QUICKSTART_TRAIN_STEPS
        if args.dataset_name or args.train_data_dir:
            warnings.warn(
                f"No --max_train_steps or --num_epochs: training {args.dataset_name or args.train_data_dir} for the "
                f"quickstart's {QUICKSTART_TRAIN_STEPS} steps, a budget sized for 1,797 8x8 digits; set one for "
                "your data (docs/training.md).",
                stacklevel=2,
            )
    if args.report_to == "wandb" and not is_wandb_available():
        raise InvalidTrainingInput("--report_to wandb needs the wandb package: pip install wandb.")
    if args.learning_rate is None:
        preset = args.model_preset if args.model_config_name_or_path is None else None
        args.learning_rate = DEFAULT_LEARNING_RATES.get(preset, DEFAULT_LEARNING_RATE)
    if args.learning_rate <= 0:
        raise InvalidTrainingInput(f"--learning_rate must be positive, got {args.learning_rate}.")
    check_objective(args)
    if args.max_grad_norm < 0:
        raise InvalidTrainingInput(f"--max_grad_norm must be >= 0, got {args.max_grad_norm}.")
    if not 0 < args.ema_max_decay < 1:
        raise InvalidTrainingInput(f"--ema_max_decay must be strictly between 0 and 1, got {args.ema_max_decay}.")
    for name in ("num_inference_steps", "periodic_inference_steps"):
        if getattr(args, name) is not None and getattr(args, name) > args.num_train_timesteps:
            raise InvalidTrainingInput(
                f"--{name} {getattr(args, name)} exceeds T = --num_train_timesteps {args.num_train_timesteps}."
            )
    if args.periodic_inference_steps is None:
        args.periodic_inference_steps = min(100, args.num_train_timesteps)
    if args.analytic_images and args.variance_type in ("learned_range", "learned"):
        raise InvalidTrainingInput(
            f"--analytic_images: --variance_type {args.variance_type} learns its own variance; the analytic one is "
            "for fixed-variance models (use 0)."
        )
    if args.fid_every and args.fid_num_samples < 2:
        raise InvalidTrainingInput(f"--fid_num_samples must be at least 2, got {args.fid_num_samples}.")
    check_hub_options(args)
    resume = args.resume_from_checkpoint
    if resume not in (None, "latest") and not Path(resume).is_dir():
        raise InvalidTrainingInput(f"--resume_from_checkpoint {resume} does not exist (give a folder or 'latest').")
    check_output_dir_writable(Path(args.output_dir))


def check_data_options(args: argparse.Namespace) -> None:
    """The data options that fit together (train.py and distill.py)."""
    if args.dataset_name and args.train_data_dir:
        raise InvalidTrainingInput("Give either --dataset_name or --train_data_dir, not both.")
    if args.train_data_dir and not Path(args.train_data_dir).is_dir():
        raise InvalidTrainingInput(f"--train_data_dir {args.train_data_dir} is not a folder.")


def check_objective(args: argparse.Namespace) -> None:
    """The loss options that fit together; sets the default --vlb_weight."""
    learned = args.variance_type in LEARNED_VARIANCE_TYPES
    if not args.p2_k > 0:
        raise InvalidTrainingInput(f"--p2_k must be positive (1 / (k + SNR)^gamma at SNR = 0), got {args.p2_k}.")
    if args.loss_type == "vlb" and args.loss_weighting != "simple":
        raise InvalidTrainingInput(
            f"--loss_weighting {args.loss_weighting} weighs the MSE; --loss_type vlb trains the bound's terms alone."
        )
    if args.vlb_weight is not None:
        if args.loss_type == "vlb":
            raise InvalidTrainingInput("--vlb_weight weighs L_vlb in L_hybrid; --loss_type vlb trains L_vlb alone.")
        if not learned:
            raise InvalidTrainingInput(
                f"--vlb_weight with --variance_type {args.variance_type} would train nothing (L_hybrid's L_vlb "
                "trains the variance only); learn it with --variance_type learned_range, or train the bound "
                "alone with --loss_type vlb."
            )
        if args.vlb_weight < 0:
            raise InvalidTrainingInput(f"--vlb_weight must be >= 0, got {args.vlb_weight}.")
    args.vlb_weight = DEFAULT_VLB_WEIGHT if args.vlb_weight is None else args.vlb_weight
    check_log_normal(args)


def check_log_normal(args: argparse.Namespace) -> None:
    """--log_normal_mean / --log_normal_std belong to --timestep_sampling log_normal; sets their defaults."""
    given = [name for name in ("log_normal_mean", "log_normal_std") if getattr(args, name) is not None]
    if args.timestep_sampling != "log_normal":
        if given:
            raise InvalidTrainingInput(f"--{given[0]} needs --timestep_sampling log_normal.")
        return
    if args.loss_type == "vlb":
        origin = f" (--recipe {args.recipe}'s)" if RECIPES[args.recipe]["timestep_sampling"] == "log_normal" else ""
        raise InvalidTrainingInput(
            f"--timestep_sampling log_normal{origin} reweights the loss of each timestep, so --loss_type vlb would "
            "no longer train the bound; use --timestep_sampling importance, which keeps it."
        )
    args.log_normal_mean = LOG_NORMAL_MEAN if args.log_normal_mean is None else args.log_normal_mean
    args.log_normal_std = LOG_NORMAL_STD if args.log_normal_std is None else args.log_normal_std
    if not math.isfinite(args.log_normal_mean):
        raise InvalidTrainingInput(f"--log_normal_mean must be finite, got {args.log_normal_mean}.")
    if not (math.isfinite(args.log_normal_std) and args.log_normal_std > 0):
        raise InvalidTrainingInput(f"--log_normal_std must be finite and > 0, got {args.log_normal_std}.")


def check_mixed_precision(mixed_precision: str, device_type: str) -> None:
    """fp16 autocast needs a GPU: on a CPU it runs, several times slower than float32, and gains nothing. The
    precision may come from the option or from `accelerate launch`/`accelerate config`, so this runs once the
    accelerator is built."""
    if mixed_precision == "fp16" and device_type == "cpu":
        raise InvalidTrainingInput(
            "--mixed_precision fp16 needs a GPU and this run is on the CPU; use --mixed_precision bf16 or no."
        )


def check_output_dir_writable(output_dir: Path) -> None:
    """Create output_dir if needed and prove a file can be written there, before hours of training."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise InvalidTrainingInput(f"--output_dir {output_dir} is not writable: {reason}.") from None
