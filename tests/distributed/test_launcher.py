"""The launcher's pieces, without starting a job: the hosts file, the ssh command of a remote node, the workers'
command line."""
import pytest

from gluon_yolo3.distributed import launcher


def test_hosts_file_and_ssh_command(tmp_path):
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("# the cluster\nnode1\nalice@node2:2222   # second\n\n")
    parsed = launcher.read_hosts(hosts)
    assert [(h.address, h.name, h.port) for h in parsed] == [("node1", "node1", None),
                                                             ("alice@node2", "node2", 2222)]
    job = launcher.Job(launcher.worker_command(["train", "r.yaml", "--set", "a=1 b"], "dist_sync"), workers=3,
                       servers=1, hosts=parsed, python="/opt/py/bin/python", root_uri="10.0.0.1", port=9000,
                       cwd="/work dir", env={"OMP_NUM_THREADS": "4"})
    job.heartbeat = type("HB", (), {"address": "10.0.0.1:9001"})()
    worker1 = [n for n in job.nodes if n.role == "worker"][1]
    argv = job.ssh_argv(worker1)
    assert argv[:6] == ["ssh", "-o", "BatchMode=yes", "-p", "2222", "alice@node2"]
    remote = argv[6]
    assert remote.startswith("cd '/work dir' && env ")
    for assignment in ("OMP_NUM_THREADS=4", "DMLC_ROLE=worker", "DMLC_PS_ROOT_URI=10.0.0.1", "DMLC_PS_ROOT_PORT=9000",
                       "DMLC_NUM_SERVER=1", "DMLC_NUM_WORKER=3", "DMLC_NODE_HOST=node2",
                       "GLUON_YOLO3_HEARTBEAT=10.0.0.1:9001", "GLUON_YOLO3_NODE=worker:1"):
        assert f" {assignment} " in remote, assignment
    assert remote.endswith("/opt/py/bin/python -m gluon_yolo3.node --node worker:1 -- train r.yaml "
                           "--set 'a=1 b' --kvstore dist_sync")
    assert [n.host.name if n.host else "local" for n in job.nodes] == ["local", "node1", "node1", "node2", "node1"]

    bad = tmp_path / "bad.txt"
    bad.write_text("node1\nnode2 node3\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: one host per line"):
        launcher.read_hosts(bad)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        launcher.read_hosts(tmp_path / "missing.txt")


def test_worker_command():
    assert launcher.worker_command(["train", "r.yaml"], "dist_sync") == ["train", "r.yaml", "--kvstore", "dist_sync"]
    assert launcher.worker_command(["train", "r.yaml", "--kvstore=dist_device_sync"], "dist_sync")[-1] == \
        "--kvstore=dist_device_sync"
    assert launcher.worker_command(["loop.py", "x"], "dist_sync") == ["loop.py", "x"]
    with pytest.raises(ValueError, match="workers run `train RECIPE"):
        launcher.worker_command(["eval", "r.yaml"], "dist_sync")
    with pytest.raises(ValueError, match="--kvstore must be a dist kvstore"):
        launcher.launch(["train", "r.yaml"], workers=2, kvstore="device")
