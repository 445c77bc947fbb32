"""The site builds as CI builds it: `mkdocs build --strict` (a broken link or anchor, a page left out of the
navigation, a reference that cannot be made, a missing included file: each fails)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from markdown.extensions.toc import slugify


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


# what a newcomer looks for -> (the page the README's table and the site's navigation lead to, its heading, what
# the section under it must hold: a command block, or for the speed table the reading of its ratio column)
NEWCOMER = {
    "train on a VOC folder": ("own-data.md", "Your own data", "```"),
    "write a loss plugin": ("plugins.md", "A loss term", "```"),
    "add a hook": ("plugins.md", "A hook", "```"),
    "resume a run": ("commands.md", "Resume a run", "```"),
    "run on two machines": ("distributed.md", "On several machines", "```"),
    "export to ONNX": ("weights.md", "Export to ONNX", "```"),
    "read the speed table": ("speed.md", "How to read the tables", "The ratio is ours over GluonCV's"),
}


@pytest.mark.parametrize("question", NEWCOMER)
def test_a_newcomer_finds_it_from_the_readme_and_the_navigation(repo, question):
    """The README's table links to the page, the site's navigation lists it, and the page has the heading with
    what it promises under it."""
    page, heading, holds = NEWCOMER[question]
    assert f"](docs/{page})" in (repo / "README.md").read_text()

    class Loader(yaml.SafeLoader):         # mkdocs.yml's own tags (!relative) read as plain values
        pass
    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    nav = yaml.load((repo / "mkdocs.yml").read_text(), Loader=Loader)["nav"]
    assert page in [value for item in nav for value in item.values()]
    text = (repo / "docs" / page).read_text()
    match = re.search(rf"^#+ {re.escape(heading)}$(.*?)(?=^#+ |\Z)", text, flags=re.M | re.S)
    assert match and holds in match.group(1), f"{page}: no section '{heading}' holding {holds!r}"
