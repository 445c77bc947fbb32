"""The documentation's commands run: every command block marked runnable in README.md and docs/ is run, in order,
page by page, in a clean temporary copy of the checkout.

The marker is an HTML comment on the line before the fence (invisible on GitHub and on the site):

    <!-- runnable -->                               the block runs as written
    <!-- runnable
    add: {train: "--set train.epochs=1"}            appended to every `gluon-yolo3 train` command of the block
    replace: {PATH: ../shared/datasets/raccoon}     text of the block replaced before it runs
    needs: [shared]                                 skipped without ../shared/datasets beside the checkout
    -->

`add` keys are verbs (`train`, `eval`, `data check`, `launch`, ...): what the test runs is the documented command
with small settings added at its end, so a long training run becomes a short one and nothing else changes. Blocks
of one page share their copy, so a later block may use what an earlier one wrote (`runs/demo_tiny`). `python`
blocks run with the package's interpreter, the others with bash (`set -e`), `gluon-yolo3` on the PATH.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

MARKER = "<!-- runnable"
BLOCK = re.compile(r"^<!-- runnable(?P<meta>(?:(?!-->).)*?)-->\n```(?P<lang>[\w-]*)\n(?P<code>.*?)^```$",
                   re.S | re.M)
META_KEYS = {"add", "replace", "needs"}
NEEDS = {"shared"}
# what a page's copy of the checkout leaves out: version control, the virtualenv, and what runs write
LEFT_OUT = (".git", ".venv", "runs", "site", "deploy", "predictions", "build", "__pycache__", "*.egg-info",
            ".pytest_cache", "tests")


def blocks(page: Path):
    """[(line, language, code, meta)] of the runnable blocks of `page`, with the marker's YAML as a dict."""
    text = page.read_text()
    out = []
    for match in BLOCK.finditer(text):
        meta = yaml.safe_load(match.group("meta")) or {}
        out.append((text.count("\n", 0, match.start()) + 1, match.group("lang"), match.group("code"), meta))
    return out


def comment_start(line: str) -> int:
    """Where a shell comment starts in `line` (a `#` after whitespace, outside quotes), else len(line)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return i
    return len(line)


def verb(command: str) -> str:
    """`train` for `gluon-yolo3 train ...`, `data check` for `gluon-yolo3 data check ...`, else ''."""
    words = shlex.split(command)
    while words and re.fullmatch(r"\w+=.*", words[0]):      # VAR=value before the program
        words = words[1:]
    if len(words) < 2 or Path(words[0]).name != "gluon-yolo3":
        return ""
    return " ".join(words[1:3]) if words[1] == "data" and len(words) > 2 else words[1]


def script(code: str, meta: dict) -> str:
    """The block as it runs: replacements made, continuation lines joined, `add` appended to its verbs."""
    for old, new in (meta.get("replace") or {}).items():
        code = code.replace(str(old), str(new))
    lines = []
    for line in code.replace("\\\n", " ").splitlines():
        command = line[:comment_start(line)].rstrip()
        extra = (meta.get("add") or {}).get(verb(command)) if command.strip() else None
        lines.append(f"{command} {extra}" if extra else command)
    return "\n".join(lines) + "\n"


def problems(page: Path):
    """What is wrong with the markers of `page`: a marker without a fence under it, unknown keys, an `add` verb
    or a `replace` text that its block does not hold."""
    found = blocks(page)
    out = []
    if page.read_text().count(MARKER) != len(found):
        out.append(f"{page.name}: a '{MARKER}' comment is not followed by a fenced block")
    for line, _, code, meta in found:
        where = f"{page.name}:{line}"
        if not isinstance(meta, dict) or set(meta) - META_KEYS:
            out.append(f"{where}: the marker takes only {sorted(META_KEYS)}, got {meta!r}")
            continue
        out += [f"{where}: needs {n!r} is not one of {sorted(NEEDS)}" for n in meta.get("needs") or [] if n not in NEEDS]
        out += [f"{where}: replace {old!r} is not in the block" for old in meta.get("replace") or {}
                if str(old) not in code]
        verbs = {verb(line[:comment_start(line)]) for line in script(code, {}).splitlines() if line.strip()}
        out += [f"{where}: add {v!r}, but the block has no `gluon-yolo3 {v}` command" for v in meta.get("add") or {}
                if v not in verbs]
    return out


def pages(repo: Path):
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def pytest_generate_tests(metafunc):
    """`page`: every page; `runnable_page`: the pages with runnable blocks (ids: their paths in the checkout)."""
    repo = metafunc.config.rootpath
    for name, chosen in (("page", pages(repo)), ("runnable_page", [p for p in pages(repo) if blocks(p)])):
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, chosen, ids=[str(p.relative_to(repo)) for p in chosen])


def test_the_docs_have_runnable_blocks(repo):
    runnable = [p.name for p in pages(repo) if blocks(p)]
    assert "README.md" in runnable and len(runnable) >= 5, runnable


def test_markers_are_well_formed(page):
    assert problems(page) == []


def test_script_adds_settings_to_the_named_verbs_only():
    code = ("gluon-yolo3 train r.yaml --set 'a=[1, 2]'   # trains\n"
            "gluon-yolo3 data check r.yaml \\\n    --set data.root=PATH\n"
            "gluon-yolo3 eval r.yaml\n")
    meta = {"add": {"train": "--set train.epochs=1", "data check": "--set x=1"}, "replace": {"PATH": "/d"}}
    assert script(code, meta) == ("gluon-yolo3 train r.yaml --set 'a=[1, 2]' --set train.epochs=1\n"
                                  "gluon-yolo3 data check r.yaml      --set data.root=/d --set x=1\n"
                                  "gluon-yolo3 eval r.yaml\n")


def copy_checkout(repo: Path, dest: Path) -> Path:
    """A copy of the checkout without what LEFT_OUT names; `.venv` links to the interpreter's environment and
    `../shared` to the one beside the checkout, if any."""
    checkout = dest / "checkout"
    shutil.copytree(repo, checkout, ignore=shutil.ignore_patterns(*LEFT_OUT), symlinks=True)
    (checkout / ".venv").symlink_to(Path(sys.prefix))
    if (repo.parent / "shared").is_dir():
        (dest / "shared").symlink_to(repo.parent / "shared")
    return checkout


@pytest.mark.slow
def test_runnable_blocks_run(runnable_page, repo, tmp_path, job_env):
    checkout = copy_checkout(repo, tmp_path)
    env = {**os.environ, **job_env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GLUON_YOLO3_CACHE": str(tmp_path / "cache")}
    ran = 0
    for line, lang, code, meta in blocks(runnable_page):
        if "shared" in (meta.get("needs") or []) and not (repo.parent / "shared/datasets").is_dir():
            continue
        body = script(code, meta)
        if lang == "python":
            command = [sys.executable, "-c", body]
        else:
            command = ["bash", "-c", "set -euo pipefail\n" + body]
        proc = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (f"{runnable_page.name}:{line} exited {proc.returncode}\n--- ran:\n{body}"
                                      f"--- output (end):\n{(proc.stdout + proc.stderr)[-4000:]}")
        ran += 1
    if not ran:
        pytest.skip("every runnable block of this page needs ../shared")
