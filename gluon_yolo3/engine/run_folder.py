"""Run folders: where a run writes, chosen so that no earlier run and no other files are ever overwritten, and
written by one process at a time.

    folder = make_run_folder(recipe, workdir=None, resume=False)    # runs/<name>, numbered when taken
    lock = hold_run_folder(folder, resume, log)     # this process is the one writer ...
    lock.release()                                  # ... until it releases the lock or ends

A run folder holds `recipe.yaml`, `metrics.jsonl`, `checkpoints/`, `training.png` and `predictions/`.
A recipe's `name` is a name (one folder under runs/), never a path: `--workdir` chooses another folder.

One writer: the process that trains into a folder holds an exclusive `flock` on its `.lock` file (with its PID,
host and start time written in it, for the message a second writer gets). The kernel drops the lock when the
process ends in any way, `kill -9` included, so a killed run never leaves it stuck; forked children (DataLoader
workers) close their copy, so one that outlives its parent does not keep it either. Readers (eval, predict,
export) take no lock: every file of a run is written whole and renamed into place.
"""
from __future__ import annotations

import copy
import datetime
import errno
import fcntl
import os
import socket
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from ..files import WriteError, cannot_write, make_folder
from ..inference.weights import weights_folder
from ..recipe import parse_yaml
from ..schema import RecipeError

RUN_FILES = ("recipe.yaml", "metrics.jsonl", "checkpoints")     # a folder holding one of these is a run
LOCK_FILE = ".lock"
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
    """Whether `folder` exists, holds something beyond the run lock and the data checks' DATA_FILES, and holds no
    run (none of recipe.yaml, metrics.jsonl, checkpoints/)."""
    return (folder.is_dir() and any(p.name != LOCK_FILE and p.name not in DATA_FILES for p in folder.iterdir())
            and not any((folder / f).exists() for f in RUN_FILES))


def make_run_folder(recipe: Mapping[str, Any], workdir: Optional[str], resume: bool) -> Path:
    """`runs/<recipe name>` (numbered when taken) or `workdir`. Never reuses a folder holding a run unless
    resuming, and never writes into a folder that holds something other than a run."""
    if workdir:
        folder = Path(workdir)
        if folder.exists() and not folder.is_dir():
            raise WriteError(f"cannot write {folder}: it is a file, not a folder (--workdir)")
        check_run_state(folder, resume)
    else:
        base = Path("runs") / check_run_name(recipe["name"])
        folder = base
        if not resume:
            n = 2
            while (folder / "checkpoints").exists() or lock_holder(folder):
                folder, n = Path(f"{base}-{n}"), n + 1
    if holds_other_files(folder):
        raise RunFolderError(f"'{folder}' already holds files that are not a gluon-yolo3 run; choose an empty or "
                             "new folder with --workdir (or another recipe name)")
    return make_folder(folder)


def with_run_splits(recipe: Mapping[str, Any], weights) -> Mapping[str, Any]:
    """`recipe` reading the split its run recorded: when the recipe reads a dataset folder (`data.root`) without
    `data.split_dir` and the run folder of `weights` (a run folder, or weights in it) recorded the split of that
    same folder in `splits/`, a copy with `data.split_dir` set to it; else `recipe` itself. So that evaluating,
    calibrating on or resuming a run reads the images it was trained and validated on, not a split drawn again
    from the folder as it is now."""
    data = recipe["data"]
    if weights is None or not data.get("root") or data.get("split_dir"):
        return recipe
    run = weights_folder(weights)
    splits = run / "splits"
    if not (splits / "train.txt").is_file() or not (splits / "val.txt").is_file():
        return recipe
    try:
        stored = (parse_yaml((run / "recipe.yaml").read_text()) or {}).get("data", {}).get("root")
    except Exception:       # noqa: BLE001 - no readable recipe beside it: not a run we can vouch for
        return recipe
    if not stored or Path(str(stored)).expanduser().resolve() != Path(data["root"]).expanduser().resolve():
        return recipe
    out = copy.deepcopy(dict(recipe))
    out["data"]["split_dir"] = str(splits)
    return out


def check_run_state(folder: Path, resume: bool):
    """A folder to continue holds checkpoints; a folder for a new run holds none."""
    if resume and not (folder / "checkpoints").is_dir():
        raise FileNotFoundError(f"--resume: '{folder}' holds no run with checkpoints to continue")
    if not resume and (folder / "checkpoints").exists():
        raise RunFolderError(f"run folder '{folder}' already holds a run: pass --resume to continue it, "
                             "or choose another --workdir")


# ---- one writer per run folder --------------------------------------------------------------------------

_HELD: Dict[int, Path] = {}        # descriptors of the locks this process holds


def _close_in_child():
    """In a forked child (a DataLoader worker): close the copies of the parent's lock descriptors, so that the
    lock ends with the parent even if the child lives on."""
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


def _describe(text: str) -> str:
    """`process 123 on host (since 2024-01-01 10:00:00)` from a lock file's `pid host time` line."""
    parts = text.split()
    if len(parts) >= 3 and parts[0].isdigit():
        return f"process {parts[0]} on {parts[1]} (since {' '.join(parts[2:])})"
    return "another process"


def lock_holder(folder: Path) -> Optional[str]:
    """Who holds the run folder's lock (`process 123 on host (since ...)`), or None when nobody does."""
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None                         # a file system without locks
        return _describe(os.pread(fd, 512, 0).decode("utf-8", "replace"))
    finally:
        os.close(fd)                            # also drops the probe's own lock
    return None


class RunLock:
    """The one-writer lock of a run folder (see the module docstring). `acquire()` returns self; RunFolderError
    naming the folder and the process that holds it; `release()` (or the process ending) frees it."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.fd: Optional[int] = None
        self.note: Optional[str] = None         # why the folder could not be locked (a file system without locks)

    def acquire(self) -> "RunLock":
        make_folder(self.folder)
        for _ in range(20):                     # the file may be replaced while we wait for it: lock the current one
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except OSError as err:
                raise cannot_write(self.path, err) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = _describe(os.pread(fd, 512, 0).decode("utf-8", "replace"))
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise RunFolderError(
                        f"run folder '{self.folder}' is being written by {holder}: one process writes a run "
                        "folder at a time. Wait for it to end (or stop it), or choose another --workdir") from None
                self.note = f"{self.path}: not locked ({err.strerror}); make sure no other process trains here"
                return self
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise RunFolderError(f"run folder '{self.folder}': its lock file keeps changing; is another process "
                                 "starting here?")
        self.fd = fd
        _HELD[fd] = self.folder
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {stamp}\n".encode(), 0)
        except OSError as err:
            self.release()
            raise cannot_write(self.path, err) from None
        return self

    def release(self, remove_alone: bool = False):
        """Free the lock; with `remove_alone`, the lock file goes when the folder holds nothing else (a run that
        failed before writing anything leaves an empty folder, which its caller removes). It is removed while
        still held, so that no process can go on holding a lock on a file that is gone."""
        if self.fd is None:
            return
        try:
            if remove_alone and not any(p.name != LOCK_FILE for p in self.folder.iterdir()):
                self.path.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            _HELD.pop(self.fd, None)
            os.close(self.fd)
            self.fd = None

    def __del__(self):
        self.release()


def hold_run_folder(folder: Path, resume: bool, log=print) -> RunLock:
    """The folder's lock for this process, and the folder checked again while held (another process may have
    made it a run since `make_run_folder` looked). On a file system without locks, a warning in `log`."""
    lock = RunLock(folder).acquire()
    if lock.note:
        log(f"warning: {lock.note}")
    try:
        check_run_state(Path(folder), resume)
    except BaseException:
        lock.release()
        raise
    return lock
