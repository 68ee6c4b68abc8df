"""--recipe: named sets of train.py's objective defaults, each measured in benchmarks/bench_recipe.py.

A recipe only changes the defaults of the options it names: an option given on the command line wins. The run
records the recipe, and the options in which it departs from it, in metrics.json and the model card.
"""

# The options a recipe may set, in the order the model card lists them.
RECIPE_OPTIONS = ("prediction_type", "loss_weighting", "snr_gamma", "beta_schedule", "timestep_sampling")

# Chosen on the screening pass of benchmarks/bench_recipe.py (Fashion-MNIST, the tiny UNet, 600 x 32 images, one
# seed; benchmarks/RESULTS.md, "Training recipes at equal budget") and measured again at one epoch (938 x 64
# images, two seeds: "The finals at one epoch"): `samples` has the least Frechet distance of the recipes measured,
# `likelihood` the least held-out bound (trained or analytic variance). The rule makes `samples` the
# default unless its bound with the analytic variance is more than 1.5x likelihood's: it is 4.6x, so the default
# is `balanced`, the least Frechet distance among the recipes that pass the rule.
RECIPES = {
    # v-prediction (Salimans & Ho 2022) on the cosine schedule (Nichol & Dhariwal 2021), L_simple, uniform
    # timesteps: at one epoch FD 21.6 and 19.8 (seeds 0, 1) against ddpm's 58.3 and 59.7, at 3.808 and 3.776
    # bits/dim with the analytic variance (ddpm's 3.778 and 3.801), 1.065x and 1.056x likelihood's; v-prediction
    # on linear betas (the default before 2026-12-04's second change) draws about the same FD (21.8 and 21.3) at
    # 0.17 bits/dim more. On the screen FD 57.1 (linear betas: 64.2; sigmoid: 79.7) against ddpm's 104.7. The
    # grid's learning rate is 1e-3; at train.py's own for the tiny UNet (3e-3, 200 warmup steps) FD 13.1 and 14.5
    # against ddpm's 40.9 and 35.3, at 3.622 and 3.599 bits/dim against 3.639 and 3.639.
    "balanced": {
        "prediction_type": "v_prediction",
        "loss_weighting": "simple",
        "snr_gamma": 5.0,
        "beta_schedule": "cosine",
        "timestep_sampling": "uniform",
    },
    # Ho et al. 2020: epsilon prediction, L_simple, linear betas, uniform timesteps; train.py's default before the
    # grid, bitwise.
    "ddpm": {
        "prediction_type": "epsilon",
        "loss_weighting": "simple",
        "snr_gamma": 5.0,
        "beta_schedule": "linear",
        "timestep_sampling": "uniform",
    },
    # FD 34.9 against ddpm's 104.7, at 22.8 bits/dim (analytic variance) against 4.013; at one epoch FD 19.6
    # and 12.8 (seeds 0, 1) against 58.3 and 59.7, at 16.6 and 15.7 bits/dim against 3.778 and 3.801.
    "samples": {
        "prediction_type": "sample",
        "loss_weighting": "simple",
        "snr_gamma": 5.0,
        "beta_schedule": "linear",
        "timestep_sampling": "uniform",
    },
    # Log-normal timesteps (EDM's noise distribution, Karras et al. 2022): the least bound measured, 3.722 bits/dim
    # with the analytic variance against ddpm's 4.013 and the cosine schedule's 3.847 (paired -0.125 +- 0.004;
    # 3.931 against 4.299 trained), at FD 138.3 against 104.7; at one epoch 3.575 against 3.778 (paired -0.203 +-
    # 0.002; seed 1: 3.577 against 3.801, -0.224 +- 0.003), at FD 98.4 and 113.5 against 58.3 and 59.7.
    "likelihood": {
        "prediction_type": "epsilon",
        "loss_weighting": "simple",
        "snr_gamma": 5.0,
        "beta_schedule": "linear",
        "timestep_sampling": "log_normal",
    },
}

DEFAULT_RECIPE = "balanced"

# What each recipe was chosen for, for --help.
RECIPE_PURPOSES = {
    "balanced": "the least Frechet distance of the recipes whose bound is at most 1.5x likelihood's",
    "ddpm": "Ho et al. 2020",
    "samples": "the least Frechet distance",
    "likelihood": "the least bound",
}


def recipe_departures(args) -> dict:
    """The options of `args` whose values differ from its recipe's: {option: value}."""
    preset = RECIPES[args.recipe]
    return {name: getattr(args, name) for name in RECIPE_OPTIONS if getattr(args, name) != preset[name]}
