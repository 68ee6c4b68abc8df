"""Write docs/training-options.md from training/train.py's parser, so that the reference cannot drift from it.

python scripts/training_options_reference.py          # rewrite docs/training-options.md
python scripts/training_options_reference.py --check  # exit 1 if the page is stale (tests/test_docs.py)
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "training-options.md"
sys.path.insert(0, str(ROOT))  # the `training` package

from training.arguments import build_parser  # noqa: E402

HEADER = """# Training options

Every option of `training/train.py` (`accelerate launch training/train.py --help` prints the same). This page is
generated from the script's parser by `python scripts/training_options_reference.py`; a test fails when it is stale.
How to choose them for your data: [training.md](training.md).
"""


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def default_of(action: argparse.Action) -> str:
    if action.default in (None, argparse.SUPPRESS) or isinstance(action, argparse._StoreTrueAction):
        return "" if not isinstance(action, argparse._StoreTrueAction) else "off"
    if isinstance(action, argparse.BooleanOptionalAction):
        return "on" if action.default else "off"
    return f"`{action.default}`"


def option_names(action: argparse.Action) -> str:
    return ", ".join(f"`{name}`" for name in action.option_strings)


def reference() -> str:
    parser = build_parser()
    sections = [HEADER]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.option_strings and a.help != argparse.SUPPRESS]
        actions = [a for a in actions if not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        rows = ["| option | default | meaning |", "|---|---|---|"]
        for action in actions:
            meaning = (action.help or "") % {"default": action.default, "prog": parser.prog}
            if action.choices is not None and not isinstance(action, argparse.BooleanOptionalAction):
                listed = all(str(choice) in meaning for choice in action.choices)
                meaning += "" if listed else f" One of: {', '.join(f'`{c}`' for c in action.choices)}."
            rows.append(f"| {option_names(action)} | {default_of(action)} | {cell(meaning)} |")
        sections.append(f"## {group.title.capitalize()}\n\n" + "\n".join(rows) + "\n")
    return "\n".join(sections)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page differs from the parser")
    if parser.parse_args().check:
        if not PAGE.is_file() or PAGE.read_text() != reference():
            print(
                f"{PAGE.relative_to(ROOT)} is stale: run python scripts/training_options_reference.py", file=sys.stderr
            )
            return 1
        return 0
    PAGE.write_text(reference())
    print(f"Wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
