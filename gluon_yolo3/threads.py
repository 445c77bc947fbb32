"""How many OpenMP threads MXNet's CPU operators use, set before MXNet loads.

MXNet 1.9 fixes its thread count once, when its library loads: `MXNET_OMP_MAX_THREADS` if set, else
`OMP_NUM_THREADS` if set, else half the logical CPUs (it assumes two hyper-threads per core on x86).
Where each core runs one thread (many cloud VMs: `lscpu` says "Thread(s) per core: 1") that leaves half
the cores idle: on the 2-core development machine a 3x3 convolution ran 1.9x faster with both cores.
`use_physical_cores()` therefore sets `MXNET_OMP_MAX_THREADS` to the number of physical cores this process
may run on: MXNet's own choice on hyper-threaded machines, all cores elsewhere. It sets MXNet's variable,
not `OMP_NUM_THREADS`, which numpy's OpenBLAS also reads: DataLoader workers doing numpy work stay
single-threaded (with OMP_NUM_THREADS=2 the data-pipeline benchmark ran 3x to 5x slower). A value the user
exported in either variable is kept, and nothing changes once MXNet is imported (import gluon_yolo3
first, or export the variable yourself).

`spin_before_sleeping()` sets how long an idle OpenMP thread spins before it sleeps. libgomp (MXNet's
OpenMP) spins 300000 times by default, but only 100 times once a process runs more OpenMP threads than
CPUs, which MXNet does (its engine threads each run a team). A thread that slept must be woken for the next
operator, and on a VM a wake-up is slow: the demo detector at batch 8 took 41.5 ms with libgomp's default
and 11.8 ms with `OMP_WAIT_POLICY=ACTIVE` and `GOMP_SPINCOUNT=300000` (libgomp's own 300000 spins, and 1000
instead of 100 when oversubscribed); Darknet-53 at 416, batch 1: 237 -> 217 ms (benchmarks/PROFILE.md).
Idle threads still go to sleep after spinning. A value the user exported in either variable is kept.

One thread per core is right when the cores are the job's. Where other busy processes share them, every
parallel region waits for its slowest thread, and a thread that lost its core stalls the rest: there,
export MXNET_OMP_MAX_THREADS=1 (or fewer threads than free cores).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

SYSFS_CPU = Path("/sys/devices/system/cpu")
VARIABLE = "MXNET_OMP_MAX_THREADS"
SPIN = {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "300000"}


def physical_cores() -> Optional[int]:
    """Distinct physical cores among the CPUs this process may use; None where Linux's topology is absent."""
    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return None
    cores = set()
    for cpu in cpus:
        path = SYSFS_CPU / f"cpu{cpu}" / "topology" / "thread_siblings_list"
        try:
            cores.add(path.read_text().strip())
        except OSError:
            return len(cpus)
    return len(cores) or None


def use_physical_cores() -> Optional[int]:
    """Set MXNET_OMP_MAX_THREADS to the physical core count unless the user set it or OMP_NUM_THREADS, or
    MXNet is already loaded; -> the value set, else None."""
    if VARIABLE in os.environ or "OMP_NUM_THREADS" in os.environ or "mxnet" in sys.modules:
        return None
    cores = physical_cores()
    if cores is None:
        return None
    os.environ[VARIABLE] = str(cores)
    return cores


def spin_before_sleeping() -> bool:
    """Set OMP_WAIT_POLICY=ACTIVE and GOMP_SPINCOUNT=300000 unless the user set either or MXNet is loaded;
    -> whether they were set."""
    if any(name in os.environ for name in SPIN) or "mxnet" in sys.modules:
        return False
    os.environ.update(SPIN)
    return True
