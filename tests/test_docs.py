"""Every example in README.md and docs/*.md runs, and the training options reference matches train.py's parser.

The convention, for whoever writes a page:

- Every fenced ```python and ```bash block of README.md and of each docs/*.md page is executed, in the order of
  the page. The python blocks of one page share one namespace (a later block sees an earlier block's names); the
  commands of bash blocks share no shell state (no `cd` or variables from one line to the next).
- A page runs in a fresh temporary working directory that holds:
  - `outputs/simple-ddpm`: the folder training leaves behind (pipeline, samples.png, metrics.json, model card;
    `tests/tiny_pipeline.py`) for a tiny random UNet on 1-channel 8x8 images, as the quickstart's, with the default
    scheduler (T = 1000, linear betas): every call works as on a trained model, only the pictures are noise;
  - `my_images/`: 12 small RGB photos (48 x 40 PNG) for "train on / measure a folder" examples;
  - `training`, `benchmarks`, `scripts`: the repository's folders, so `python training/train.py ...` works as
    from the repository root. train.py runs with a shrunk budget: the harness appends options that override the
    page's (2 steps of 8 images, 32 training images, 4 samples at 5 steps, a 3-term bound, float32, one thread, no
    checkpoints or trackers), so a page shows the real command and the suite stays fast. The folder it writes is real.
    distill.py is shrunk alike, to one update of 8 images per round.
- Each command of a bash block (continuation lines joined) runs in `bash -e`, except a plain `simple-ddpm ...`
  command (no pipes, redirections or variables), which runs in the test's process through `simple_ddpm.cli.main`,
  the console script's entry point, in the same working directory. Shell commands find `python`, `accelerate` and
  `simple-ddpm` of the interpreter running the tests, with this repository's `src` first on PYTHONPATH;
  HF_HUB_OFFLINE and HF_DATASETS_OFFLINE are set (no network).
- A block preceded by the line `<!-- docs-test: skip (reason) -->` (other HTML comment lines may stand between
  the marker and the fence, e.g. README's `<!-- test-command -->`) is only parsed: python blocks are compiled,
  bash blocks checked with `bash -n`. Use it for what needs a GPU, the network, package installs or hours, and
  say which in the reason.
- Relative links of every page point to files that exist (pages other branches are adding are listed in
  PAGES_TO_COME until they land).
Keep examples cheap: a few images, few steps; the whole module runs in well under a minute.
"""

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_pipeline import save_trained_folder, tiny_unet

from simple_ddpm import SimpleDDPMPipeline, SimpleDDPMScheduler, cli
from simple_ddpm.model_card import pipeline_model_card
from simple_ddpm.recommendation import SAMPLING_RECOMMENDATION, quoted_recommendations

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_MARKER = re.compile(r"^<!-- docs-test: skip \((?P<reason>[^)]+)\) -->$")
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)\s*$")
# Pages linked from README and docs/sampling.md that branches in progress add; remove a name once its page exists.
PAGES_TO_COME: set[str] = set()
# Appended to every train.py command of a page: the last occurrence of an option wins in argparse.
SHRUNK_TRAINING = [
    "--max_train_steps", "2", "--train_batch_size", "8", "--max_train_samples", "32", "--num_epochs", "1",
    "--num_samples", "4", "--num_inference_steps", "5", "--periodic_inference_steps", "5", "--num_eval_images", "4",
    "--final_eval_timesteps", "3", "--eval_timesteps", "3", "--sample_every", "0", "--eval_every", "0",
    "--checkpointing_steps", "0", "--report_to", "none", "--lr_warmup_steps", "1", "--mixed_precision", "no",
]  # fmt: skip
# Appended to every distill.py command: one update per round of 8 images.
SHRUNK_DISTILLATION = [
    "--max_train_steps_per_round", "1", "--train_batch_size", "8", "--max_train_samples", "32", "--num_samples", "4",
    "--num_eval_images", "4", "--checkpointing_steps", "0", "--report_to", "none", "--mixed_precision", "no",
]  # fmt: skip
TRAIN_WRAPPER = """import runpy, sys
sys.argv = [{script!r}, *sys.argv[1:], *{extra!r}]
runpy.run_path({script!r}, run_name="__main__")
"""


class Block:
    def __init__(self, page: Path, line: int, language: str, code: str, skip_reason: str | None) -> None:
        self.page, self.line, self.language, self.code, self.skip_reason = page, line, language, code, skip_reason

    def __repr__(self) -> str:
        name = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{name}:{self.line} ({self.language})"


def code_blocks(page: Path) -> list[Block]:
    """The ```python and ```bash blocks of a Markdown page, indented ones (in list items) dedented."""
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening or not opening["lang"]:
            i += 1
            continue
        indent, language, start = len(opening["indent"]), opening["lang"], i
        body, i = [], i + 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        i += 1
        if language not in ("python", "bash"):
            continue
        reason, above = None, start - 1
        while above >= 0 and lines[above].strip().startswith("<!--"):
            marker = SKIP_MARKER.match(lines[above].strip())
            reason = marker["reason"] if marker else reason
            above -= 1
        blocks.append(Block(page, start + 1, language, "\n".join(body) + "\n", reason))
    return blocks


def docs_pipeline() -> SimpleDDPMPipeline:
    """The quickstart's shape (1 channel, 8x8, T = 1000, linear betas) with a tiny random UNet."""
    pipe = SimpleDDPMPipeline(unet=tiny_unet(0, channels=1), scheduler=SimpleDDPMScheduler(clip_sample=True))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prepare_directory(directory: Path) -> dict[str, str]:
    """The working directory a page runs in (see the module docstring); returns the environment of shell blocks."""
    save_trained_folder(docs_pipeline(), directory / "outputs" / "simple-ddpm")
    photos = directory / "my_images"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(photos / f"photo_{i:02d}.png")
    for name in ("benchmarks", "scripts"):
        (directory / name).symlink_to(ROOT / name)
    training = directory / "training"
    training.mkdir()
    for source in (ROOT / "training").glob("*.py"):
        (training / source.name).symlink_to(source)
    for script, extra in (("train.py", SHRUNK_TRAINING), ("distill.py", SHRUNK_DISTILLATION)):
        (training / script).unlink()
        (training / script).write_text(TRAIN_WRAPPER.format(script=str(ROOT / "training" / script), extra=extra))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    return env


def shell_commands(code: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, comment-only and blank lines left out."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def run_block(block: Block, namespace: dict, env: dict[str, str]) -> None:
    if block.language == "python":
        code = compile(block.code, repr(block), "exec")
        if block.skip_reason is None:
            exec(code, namespace)
        return
    if block.skip_reason is not None:
        result = subprocess.run(["bash", "-n", "-c", block.code], capture_output=True, text=True)
        assert result.returncode == 0, f"{block} is not valid bash:\n{result.stderr}"
        return
    for command in shell_commands(block.code):
        words = shlex.split(command, comments=True)
        if words[0] == "simple-ddpm" and not set("|&;<>$`") & set(command.split("#")[0]):
            # in this process: the same entry point as the console script, without a second start of torch
            try:
                status = cli.main(words[1:])
            except SystemExit as stop:  # --help
                status = stop.code
            assert status == 0, f"{block}: {command} failed"
            continue
        result = subprocess.run(["bash", "-e", "-c", command], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{block}: {command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_example_of_the_page_runs(page, tmp_path, monkeypatch):
    blocks = code_blocks(page)
    env = prepare_directory(tmp_path)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page.stem}"}
    for block in blocks:
        run_block(block, namespace, env)


def test_code_blocks_are_found_with_their_skip_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "text\n```python\nx = 1\n```\n<!-- docs-test: skip (needs a GPU) -->\n<!-- test-command -->\n```bash\n"
        "nvidia-smi\n```\n- item\n\n  ```python\n  y = x + 1\n  ```\n```text\nnot code\n```\n"
    )
    blocks = code_blocks(page)
    assert [(b.language, b.code, b.skip_reason) for b in blocks] == [
        ("python", "x = 1\n", None),
        ("bash", "nvidia-smi\n", "needs a GPU"),
        ("python", "y = x + 1\n", None),
    ]


def test_a_failing_example_fails_the_page(tmp_path):
    """The bug that motivated this harness: a snippet using a name no block defines."""
    page = tmp_path / "page.md"
    page.write_text("```python\nbound = pipe.elbo(images, class_labels=labels)\n```\n")
    with pytest.raises(NameError, match="pipe"):
        run_block(code_blocks(page)[0], {}, dict(os.environ))


def test_relative_links_point_to_files_that_exist():
    missing = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path = (page.parent / target).resolve()
            if not path.exists() and str(path.relative_to(ROOT)) not in PAGES_TO_COME:
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not missing, missing


def test_training_options_reference_is_generated_from_the_parser():
    spec = importlib.util.spec_from_file_location(
        "options_reference", ROOT / "scripts" / "training_options_reference.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.PAGE.read_text() == script.reference(), "run: python scripts/training_options_reference.py"
    assert "| `--max_train_steps` |" in script.reference()


def test_readme_keeps_the_test_command_that_ci_runs():
    lines = (ROOT / "README.md").read_text().splitlines()
    marker = lines.index("<!-- test-command -->")
    assert lines[marker + 1] == "```bash"
    assert "python -m pytest" in lines[marker + 2] and lines[marker + 3] == "```"


def test_a_block_skipped_as_the_same_command_as_elsewhere_is_that_command():
    """`<!-- docs-test: skip (the same command runs in PAGE) -->` is true: PAGE holds the block, so it runs there."""
    for page in PAGES:
        for block in code_blocks(page):
            match = re.match(r"the same command runs in (\S+)", block.skip_reason or "")
            if match:
                other = ROOT / match[1]
                assert any(b.code == block.code and not b.skip_reason for b in code_blocks(other)), repr(block)


# The pages that quote the sampling recommendation; docs/sampling.md states it (simple_ddpm/recommendation.py).
RECOMMENDATION_PAGES = ["README.md", "docs/sampling.md", "docs/fast-sampling.md"]


def test_the_sampling_recommendation_is_quoted_word_for_word_wherever_it_is_quoted():
    for name in RECOMMENDATION_PAGES:
        assert quoted_recommendations((ROOT / name).read_text()) == [SAMPLING_RECOMMENDATION], name
    for page in PAGES:  # no other page holds a stale copy
        assert all(quote == SAMPLING_RECOMMENDATION for quote in quoted_recommendations(page.read_text())), page


def test_the_model_card_and_sample_help_quote_the_sampling_recommendation(tmp_path, capsys):
    trained = tmp_path / "trained"
    save_trained_folder(docs_pipeline(), trained)
    assert quoted_recommendations((trained / "README.md").read_text()) == [SAMPLING_RECOMMENDATION]
    card = str(pipeline_model_card(docs_pipeline(), "user/model"))  # a pipeline pushed without measurements
    assert quoted_recommendations(card) == [SAMPLING_RECOMMENDATION]
    with pytest.raises(SystemExit):
        cli.main(["sample", "--help"])
    assert SAMPLING_RECOMMENDATION in capsys.readouterr().out


def test_no_page_hard_codes_the_cpu_for_a_command():
    """Commands run on the GPU when there is one; `--device cpu` only in a sentence that says why."""
    for page in PAGES:
        for block in code_blocks(page):
            assert "--device cpu" not in block.code, repr(block)


def test_every_figure_of_the_recommendation_is_in_the_results_page():
    """The recommendation cites measurements; docs/results.md holds each of them (a changed table shows here)."""
    results = (ROOT / "docs" / "results.md").read_text()
    figures = re.findall(r"\d+\.\d+", SAMPLING_RECOMMENDATION)
    assert figures and [figure for figure in figures if figure not in results] == []
