"""Run folders: where a run writes, chosen so that no earlier run and no other files are ever overwritten.

    folder = make_run_folder(recipe, workdir=None, resume=False)    # runs/<name>, numbered when taken

A run folder holds `recipe.yaml`, `metrics.jsonl`, `checkpoints/`, `training.png` and `predictions/`.
A recipe's `name` is a name (one folder under runs/), never a path: `--workdir` chooses another folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from ..files import WriteError, make_folder
from ..schema import RecipeError

RUN_FILES = ("recipe.yaml", "metrics.jsonl", "checkpoints")     # a folder holding one of these is a run
# what `data check` and `data show` write into runs/<name> before the run: the run starts beside them
DATA_FILES = ("data_check", "data_show.png")


class RunFolderError(RuntimeError):
    """A run folder that would overwrite an earlier run, or a folder that is not a run."""


def check_run_name(name: Any) -> str:
    """A recipe's `name` as a run name: one folder name under runs/ (no `/`, no `..`); RecipeError otherwise."""
    text = str(name) if name is not None else ""
    if not text.strip() or "/" in text or "\\" in text or text in (".", "..") or text != text.strip():
        raise RecipeError(f"name {name!r} is not a run name: give a plain name (the run goes to runs/<name>); "
                          "choose another folder with --workdir")
    return text


def holds_other_files(folder: Path) -> bool:
    """Whether `folder` exists, holds something beyond the data checks' DATA_FILES, and holds no run (none of
    recipe.yaml, metrics.jsonl, checkpoints/)."""
    return (folder.is_dir() and any(p.name not in DATA_FILES for p in folder.iterdir())
            and not any((folder / f).exists() for f in RUN_FILES))


def make_run_folder(recipe: Mapping[str, Any], workdir: Optional[str], resume: bool) -> Path:
    """`runs/<recipe name>` (numbered when taken) or `workdir`. Never reuses a folder holding a run unless
    resuming, and never writes into a folder that holds something other than a run."""
    if workdir:
        folder = Path(workdir)
        if folder.exists() and not folder.is_dir():
            raise WriteError(f"cannot write {folder}: it is a file, not a folder (--workdir)")
        if resume and not (folder / "checkpoints").is_dir():
            raise FileNotFoundError(f"--resume: '{folder}' holds no run with checkpoints to continue")
        if not resume and (folder / "checkpoints").exists():
            raise RunFolderError(f"run folder '{folder}' already holds a run: pass --resume to continue it, "
                                 "or choose another --workdir")
    else:
        base = Path("runs") / check_run_name(recipe["name"])
        folder = base
        if not resume:
            n = 2
            while (folder / "checkpoints").exists():
                folder, n = Path(f"{base}-{n}"), n + 1
    if holds_other_files(folder):
        raise RunFolderError(f"'{folder}' already holds files that are not a gluon-yolo3 run; choose an empty or "
                             "new folder with --workdir (or another recipe name)")
    return make_folder(folder)
