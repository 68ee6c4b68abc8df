"""Write the sampling recommendation of simple_ddpm/recommendation.py into every page that quotes it.

    python scripts/sync_recommendation.py

The pages hold it between `<!-- recommendation -->` and `<!-- /recommendation -->`; tests/test_docs.py checks that
each quote is the package's text, word for word (the model card and `simple-ddpm sample --help` read it directly).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from simple_ddpm.recommendation import RECOMMENDATION_END, RECOMMENDATION_START, SAMPLING_RECOMMENDATION  # noqa: E402


def synced(text: str) -> str:
    lines, out, inside = text.splitlines(keepends=True), [], False
    for line in lines:
        if line.strip() == RECOMMENDATION_END:
            out.append(SAMPLING_RECOMMENDATION + "\n")
            inside = False
        if not inside:
            out.append(line)
        if line.strip() == RECOMMENDATION_START:
            inside = True
    return "".join(out)


if __name__ == "__main__":
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        if synced(text) != text:
            page.write_text(synced(text))
            print(f"Wrote {page.relative_to(ROOT)}")
