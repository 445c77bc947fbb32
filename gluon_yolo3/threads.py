"""How many OpenMP threads MXNet's CPU operators use, set before MXNet loads.

MXNet 1.9 reads `OMP_NUM_THREADS` once, when its library loads; unset, it takes half the logical CPUs,
assuming two hyper-threads per core. Where each core runs one thread (many cloud VMs: `lscpu` says
"Thread(s) per core: 1") that leaves half the cores idle: on the 2-core development machine a 3x3
convolution ran 1.9x faster with both cores. `use_physical_cores()` therefore sets `OMP_NUM_THREADS` to
the number of physical cores this process may run on, which is MXNet's own choice on hyper-threaded
machines and all cores elsewhere. A value the user exported is kept, and nothing changes once MXNet is
imported (import gluon_yolo3 first, or export OMP_NUM_THREADS yourself).

One thread per core is right when the cores are the job's. Where other busy processes share them, every
parallel region waits for its slowest thread, and a thread that lost its core stalls the rest: there,
export OMP_NUM_THREADS=1 (or fewer threads than free cores).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

SYSFS_CPU = Path("/sys/devices/system/cpu")


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
    """Set `OMP_NUM_THREADS` to the physical core count if unset and MXNet is not loaded; -> the value set."""
    if "OMP_NUM_THREADS" in os.environ or "mxnet" in sys.modules:
        return None
    cores = physical_cores()
    if cores is None:
        return None
    os.environ["OMP_NUM_THREADS"] = str(cores)
    return cores
