"""The site builds as CI builds it: `mkdocs build --strict` (a broken link or anchor, a page left out of the
navigation, a reference that cannot be made, a missing included file: each fails)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_the_site_builds_strict(repo, tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    proc = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=repo,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    site = tmp_path / "site"
    recipes = (site / "recipes/index.html").read_text()
    assert 'id="keys-train"' in recipes and "<code>train.lr</code>" in recipes
    assert 'id="backbones-darknet53"' in (site / "components/index.html").read_text()
    assert "The life of a training step" in (site / "architecture/index.html").read_text()
    assert (site / "zoo/bccd_tiny/eval/pr_curves.png").is_file()


def test_readme_links_lead_to_pages_and_headings(repo):
    """README.md is read on GitHub, outside the site's strict build: its relative links must lead to files, and
    a link to a heading of a docs page to a heading that exists (MkDocs' own anchors)."""
    import re

    from markdown.extensions.toc import slugify
    links = re.findall(r"\]\(([^)\s]+)\)", (repo / "README.md").read_text())
    assert len(links) >= 10
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        path, _, anchor = link.partition("#")
        target = repo / path
        assert target.is_file(), f"README.md links to {link}: no such file"
        if anchor:
            headings = re.findall(r"^#+ (.+?)(?: \{ #[\w.-]+ \})?$", target.read_text(), flags=re.M)
            assert anchor in {slugify(h, "-") for h in headings}, f"README.md links to {link}: no such heading"
