"""The README stays short, and no relative link of the README or the documentation pages points nowhere.

`mkdocs build --strict` (in scripts/test.sh) checks the pages' links too; this test also covers the README,
which the site does not include, and runs without the docs extra.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def relative_links(text: str) -> list[str]:
    """Link targets outside code, without external URLs and same-page anchors."""
    text = INLINE_CODE.sub("", FENCE.sub("", text))
    targets = [match.group(1) for match in LINK.finditer(text)]
    return [target for target in targets if not re.match(r"^([a-z][a-z0-9+.-]*:|#)", target, re.IGNORECASE)]


def test_readme_is_at_most_250_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_link_finder_sees_links_and_skips_code_and_urls():
    text = "[a](docs/x.md#part) ![b](figures/y.png) [c](https://e.org) [d](#here)\n```\n[e](nope.md)\n```\n`[f](g.md)`"
    assert relative_links(text) == ["docs/x.md#part", "figures/y.png"]


@pytest.mark.parametrize("page", markdown_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(page: Path):
    missing = []
    for target in relative_links(page.read_text(encoding="utf-8")):
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            missing.append(target)
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


def test_readme_links_into_the_documentation():
    links = relative_links((ROOT / "README.md").read_text(encoding="utf-8"))
    assert any(link.startswith("docs/") for link in links)
