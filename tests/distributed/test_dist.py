"""A real `dist_sync` job on 127.0.0.1: one scheduler, one server, two worker processes.

Reference: one process trained on the union of the workers' batches (their shards interleave one
permutation, so worker batches of 2 at step s together hold exactly the single process's batch of 4 at
step s). BatchNorm runs with frozen statistics (per-worker batch statistics would differ; SyncBatchNorm
does not cross processes). Every test is bounded by the launcher's own time limit and a subprocess
timeout, and checks that no process of the job is left.
"""
import json
import os
import subprocess
import textwrap
import time

import numpy as np
import pytest

from gluon_yolo3 import api
from gluon_yolo3.distributed.launcher import launch
from gluon_yolo3.engine.trainer import Trainer

pytestmark = [pytest.mark.dist, pytest.mark.slow]

TINY = ["model.input_size=64", "data.train.image_size=64", "data.val.image_size=64", "data.val.num_images=4",
        "data.num_workers=0", "model.norm.type=frozen", "train.lr=0.005", "train.log_every=1"]

WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    from gluon_yolo3 import api
    from gluon_yolo3.distributed import kvstore as dist
    from gluon_yolo3.engine import trainer as trainer_module
    from gluon_yolo3.engine.trainer import Trainer
    out, recipe_path, overrides = sys.argv[1], sys.argv[2], sys.argv[3:]
    job = {}
    join, build_model = dist.create_kvstore, trainer_module.build_model

    def join_and_remember(name):
        kv = join(name)
        job["rank"] = kv.rank    # not the kvstore itself: it must end with the trainer's fit
        return kv

    def build_elsewhere(recipe, classes, contexts):
        # workers other than rank 0 start from other weights: the trainer must hand out rank 0's
        net = build_model(recipe, classes, contexts)
        if job["rank"] != 0:
            for p in net.collect_params().values():
                p.set_data(p.data() * 1.5 + 0.1)
        return net

    dist.create_kvstore, trainer_module.build_model = join_and_remember, build_elsewhere
    trainer = Trainer(api.load(recipe_path, overrides), out + "/run", kvstore="dist_sync", progress=False,
                      log=lambda *_: None)
    summary = trainer.fit()
    params = {k: p.data().asnumpy() for k, p in trainer.net._collect_params_with_prefix().items()}
    np.savez(f"{out}/rank{trainer.rank}.npz", **params)
    print("worker done", trainer.rank, summary["steps"], summary["global_batch"], flush=True)
""")


@pytest.fixture
def run_launcher(cli_argv, repo):
    """run_launcher(args, timeout=150, **popen) -> (exit code, output) of `gluon-yolo3 launch ARGS...` in its own
    process group; killed with everything it started on timeout."""
    def run_launcher(args, timeout=150, **kwargs):
        proc = subprocess.Popen(cli_argv + ["launch"] + args, cwd=repo, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)
        try:
            output, _ = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                output = proc.communicate()[0]
                pytest.fail(f"the launcher did not end within {timeout} s:\n{output}")
        return proc.returncode, output
    return run_launcher


def test_dist_sync_workers_equal_one_process_on_the_union_of_their_batches(tmp_path, alive, demo_recipe, job_env, repo,
                                                                           started_pids):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    job = TINY + ["data.train.num_images=12", "train.batch_size=2", "train.epochs=1", "train.val_every=0"]
    lines = []
    started = time.monotonic()
    code = launch([str(script), str(tmp_path), demo_recipe] + job, workers=2, servers=1, env=job_env, cwd=str(repo),
                  timeout=120, grace=5, log=lines.append)
    assert code == 0, "\n".join(lines)
    assert time.monotonic() - started < 120
    assert not [pid for pid in started_pids("\n".join(lines)) if alive(pid)]

    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in (0, 1)]
    # the reference: one process, batch 4 = both workers' batches of 2, same seed and data
    reference = Trainer(api.load(demo_recipe, TINY + ["data.train.num_images=12", "train.batch_size=4",
                                                      "train.epochs=1", "train.val_every=0"]),
                        tmp_path / "single", progress=False, log=lambda *_: None)
    summary = reference.fit()
    assert summary["steps"] == 3
    single = {k: p.data().asnumpy() for k, p in reference.net._collect_params_with_prefix().items()}
    trained = [k for k, p in reference.net._collect_params_with_prefix().items() if p.grad_req != "null"]
    moved = 0
    for name in trained:
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=f"{name}: workers disagree")
        np.testing.assert_allclose(ranks[0][name], single[name], rtol=1e-5, atol=1e-5, err_msg=name)
    start = Trainer(api.load(demo_recipe, TINY + ["data.train.num_images=12", "train.batch_size=4"]),
                    tmp_path / "fresh", progress=False, log=lambda *_: None)
    start.setup()
    for name, p in start.net._collect_params_with_prefix().items():
        moved += int(name in trained and np.abs(p.data().asnumpy() - single[name]).max() > 1e-4)
    assert moved > 30
    # rank 0 alone wrote the run folder, with the global batch's losses
    metrics = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["kind"] == "train"] == [1, 2, 3]
    single_metrics = [json.loads(line) for line in (tmp_path / "single/metrics.jsonl").read_text().splitlines()]
    for dist_line, one_line in zip([m for m in metrics if m["kind"] == "train"], single_metrics):
        assert dist_line["loss"] == pytest.approx(one_line["loss"], rel=1e-4)


def test_launch_command_over_ssh_hosts_trains_and_only_rank_0_writes(tmp_path, run_launcher, alive, demo_recipe,
                                                                     job_env, started_pids):
    """The CLI verb with a hosts file, through a stand-in `ssh` that runs the remote command here."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_ssh = bin_dir / "ssh"
    fake_ssh.write_text("#!/bin/sh\n# ssh [-o opt] [-p port] host command: run command on this machine\n"
                        "while [ \"${1#-}\" != \"$1\" ]; do shift 2; done\nshift\nexec /bin/sh -c \"$1\"\n")
    fake_ssh.chmod(0o755)
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("127.0.0.1\n127.0.0.1\n")
    run = tmp_path / "run"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    code, output = run_launcher(
        ["--workers", "2", "--servers", "1", "--hosts", str(hosts), "--root-uri", "127.0.0.1", "--timeout", "120",
         "--grace", "5"] + [f"--env={k}={v}" for k, v in job_env.items()]
        + ["--", "train", demo_recipe, "--workdir", str(run), "--no-progress"]
        + [f"--set={o}" for o in TINY + ["data.train.num_images=16", "train.batch_size=2", "train.epochs=2",
                                         "train.val_every=2", "train.ema={decay: 0.9}"]], env=env)
    assert code == 0, output
    assert "launch: all 2 workers finished" in output
    assert output.count("launch: started") == 4
    assert not [pid for pid in started_pids(output) if alive(pid)]
    last = json.loads((run / "checkpoints/last.json").read_text())
    assert last["epoch"] == 2 and last["step"] == 8            # 16 images / (2 workers x 2) per epoch
    assert (run / "checkpoints/best.params").exists() and (run / "checkpoints" / last["train_params"]).exists()
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["kind"] == "train"] == list(range(1, 9))   # one writer
    assert [m["epoch"] for m in metrics if m["kind"] == "val"] == [2]
    assert (run / "training.png").exists() and (run / "recipe.yaml").exists()
