"""The sampling recommendation (which sampler, how many steps, at which budget), written once.

docs/sampling.md states it between the lines `<!-- recommendation -->` and `<!-- /recommendation -->`; README.md,
docs/fast-sampling.md and the model card quote it between the same markers, and `simple-ddpm sample --help` prints
it. tests/test_docs.py checks that every quote is this text, word for word. The numbers are those of
docs/results.md and benchmarks/RESULTS.md ("Samplers against steps", "Fewer steps"); change them there first.

To recommend one more sampler, add one bullet to `SAMPLING_RECOMMENDATION_BULLETS` and run
`python scripts/sync_recommendation.py`, which writes the text into every page that quotes it.
"""

SAMPLING_RECOMMENDATION_HEADING = (
    "Which sampler and how many steps, measured on the Fashion-MNIST benchmark model (an undertrained `tiny`\n"
    "UNet; FD in a classifier's features, lower is better; docs/results.md has the tables):"
)

# One bullet per budget, most network calls first; continuation lines indented by two spaces (a Markdown list).
SAMPLING_RECOMMENDATION_BULLETS = (
    "- All 1,000 steps (the default): DDPM. The best samples; the reference of the rows below.",
    "- 100 steps, a tenth of the cost: DDPM respaced (`num_inference_steps=100`). FD +6.6% over 1,000 steps on\n"
    "  500 samples; on two sets of 200 seeds +0.7% and +13%.",
    "- 50 steps: DDPM. FD +5% over 100 steps on 1,000 samples; +13% and +16% over 1,000 steps on two sets of\n"
    "  200 seeds. DDIM is 8% worse than DDPM here.",
    "- 25 steps: DDPM or DDIM (`eta=0`, `--scheduler ddim`), a tie within the noise: FD 122.5 and 125.5 on 1,000\n"
    "  samples (137.4 and 130.2 on 200), 17-20% above 100 steps.",
    "- 10 steps: DDIM (`eta=0`). FD 142.5 on 1,000 samples; DDPM 166.9 against DDIM's 145.2 on 200.",
    "- 1 to 8 steps: a student distilled from the model (docs/distillation.md; a v-prediction model: FD 84.1 at 4\n"
    "  steps against its DDIM's 122.1 and its 100-step DDPM's 64.2), for 0.65x to 3.8x the training's compute.",
    "- Not for samples: diffusers' `DDIMScheduler` swapped in (FD 187.9 at 25 steps) and optimal timesteps (they\n"
    "  lower the bound of a short chain, and made samples worse).",
)

SAMPLING_RECOMMENDATION_UNCERTAINTY = (
    "How sure: one model, one feature network. An FD of 200 samples moves by up to 15 (about 15%) between sets of\n"
    "seeds, so differences under that are ties; on your own model, measure before you settle on fewer steps:\n"
    "`simple-ddpm fid MODEL DATA --num-inference-steps K` (at least 1,000 images)."
)

SAMPLING_RECOMMENDATION = "\n".join(
    [SAMPLING_RECOMMENDATION_HEADING, "", *SAMPLING_RECOMMENDATION_BULLETS, "", SAMPLING_RECOMMENDATION_UNCERTAINTY]
)

RECOMMENDATION_START = "<!-- recommendation -->"
RECOMMENDATION_END = "<!-- /recommendation -->"


def quoted_recommendations(text: str) -> list[str]:
    """Every block of a Markdown page between the recommendation markers, without the marker lines."""
    quotes, lines = [], text.splitlines()
    for start, line in enumerate(lines):
        if line.strip() == RECOMMENDATION_START:
            end = lines.index(RECOMMENDATION_END, start)
            quotes.append("\n".join(lines[start + 1 : end]).strip("\n"))
    return quotes
