"""OpenMP thread default: one thread per physical core, set before MXNet loads, a user's value kept."""
import os
import subprocess
import sys

from gluon_yolo3 import threads


def fake_topology(tmp_path, siblings):
    for cpu, text in enumerate(siblings):
        folder = tmp_path / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "thread_siblings_list").write_text(text + "\n")


def test_hyper_threads_count_once(tmp_path, monkeypatch):
    fake_topology(tmp_path, ["0,2", "1,3", "0,2", "1,3"])
    monkeypatch.setattr(threads, "SYSFS_CPU", tmp_path)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert threads.physical_cores() == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2})    # pinned to one core's two threads
    assert threads.physical_cores() == 1


def test_one_thread_per_core_counts_every_cpu(tmp_path, monkeypatch):
    fake_topology(tmp_path, ["0", "1", "2"])
    monkeypatch.setattr(threads, "SYSFS_CPU", tmp_path)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert threads.physical_cores() == 3


def _omp_after_import(env):
    code = "import os, gluon_yolo3, mxnet; print(os.environ.get('OMP_NUM_THREADS'))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_import_sets_the_default_and_keeps_a_users_value():
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    assert _omp_after_import(env) == str(threads.physical_cores())
    assert _omp_after_import(dict(env, OMP_NUM_THREADS="3")) == "3"


def test_nothing_changes_once_mxnet_is_loaded(monkeypatch):
    import mxnet  # noqa: F401
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.use_physical_cores() is None
    assert "OMP_NUM_THREADS" not in os.environ
