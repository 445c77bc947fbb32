"""Intel AMX for int8: let MXNet's oneDNN use the matrix tiles, set up before MXNet loads.

MXNet 1.9.1 ships oneDNN 2.4, which runs int8 convolutions on AMX tiles (Sapphire Rapids and later Xeons)
only when told to (`DNNL_MAX_CPU_ISA=AVX512_CORE_AMX`); by default it stops at AVX-512 VNNI. Linux (5.16
and later) also lets a process use the tile registers only after it asks (`arch_prctl(ARCH_REQ_XCOMP_PERM,
XFEATURE_XTILEDATA)`), which oneDNN 2.4 does not do: without that request the first AMX instruction kills
the process with SIGILL. `allow_amx()` asks the kernel, and only once it has agreed sets the variable.
On the 2-core development machine one 3x3 int8 convolution (256 -> 512 channels, 26x26, batch 8) ran at
3023 GOP/s against 1230 with VNNI, and the int8 Darknet-53 YOLOv3 at 416 px 2.0x (batch 1) and 2.1x (batch
8) faster (`make bench`, benchmarks/PROFILE.md). fp32 is unchanged: its kernels have no AMX form in this oneDNN.

The permission belongs to the process and its forked children (DataLoader workers); a program started
with exec (subprocess) loses it but inherits the variable. Such a child that imports gluon_yolo3 asks
again; one that runs MXNet int8 without importing gluon_yolo3 first would die with SIGILL: give it
`DNNL_MAX_CPU_ISA=AVX512_CORE_VNNI` in its environment, or import gluon_yolo3 there first. A value the
user exported in `DNNL_MAX_CPU_ISA` (or oneDNN's older `MKLDNN_MAX_CPU_ISA`) is kept, and nothing is set
once MXNet is imported (oneDNN may have fixed its instruction set by then).
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys
from pathlib import Path

VARIABLE = "DNNL_MAX_CPU_ISA"
USER_VARIABLES = (VARIABLE, "MKLDNN_MAX_CPU_ISA")
AMX_ISA = "AVX512_CORE_AMX"           # also AVX512_CORE_AMX_...; oneDNN 2.4's "ALL" leaves AMX off
CPUINFO = Path("/proc/cpuinfo")
SYS_ARCH_PRCTL = 158                   # x86-64 system call number
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18


BF16_FLAGS = ("amx_bf16", "avx512_bf16")   # bfloat16 convolutions on AMX tiles, or on AVX-512 units


def cpu_flags() -> set:
    """The CPU flags /proc/cpuinfo lists (the first CPU's: read at every import, so the file is not read past
    them); empty where there is no such file."""
    try:
        with open(CPUINFO) as lines:
            for line in lines:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_amx_int8() -> bool:
    """Whether the CPU lists the AMX tiles and their int8 instructions."""
    return {"amx_tile", "amx_int8"} <= cpu_flags()


def cpu_bf16() -> str | None:
    """The CPU flag that runs bfloat16 convolutions fast (`amx_bf16`, else `avx512_bf16`), or None."""
    flags = cpu_flags()
    return next((f for f in BF16_FLAGS if f in flags), None)


def require_bf16(what: str, instead: str) -> str:
    """The CPU's bfloat16 flag (`cpu_bf16`), or ValueError: `what` needs one of BF16_FLAGS; `instead` says what
    to use in its place."""
    flag = cpu_bf16()
    if flag is None:
        raise ValueError(f"{what} needs a CPU with {' or '.join(BF16_FLAGS)} (Intel Sapphire Rapids or Cooper Lake "
                         "and later), and this CPU's flags (/proc/cpuinfo) list neither: without them bfloat16 runs "
                         f"slower than float32. {instead}")
    return flag


def request_tile_permission() -> bool:
    """Ask Linux for this process's permission to use the AMX tile registers; -> whether it was granted."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return False


def allow_amx() -> bool:
    """Set DNNL_MAX_CPU_ISA=AVX512_CORE_AMX when the CPU has AMX int8, Linux grants the tiles, the user set no
    instruction-set variable and MXNet is not loaded yet; -> whether it was set. Where the user chose AMX
    themselves, the permission is still requested (without it their choice would crash)."""
    if sys.platform != "linux" or platform.machine() != "x86_64" or not cpu_has_amx_int8():
        return False
    chosen = [os.environ[name] for name in USER_VARIABLES if name in os.environ]
    if chosen:
        if any(uses_amx(value) for value in chosen):
            request_tile_permission()
        return False
    if "mxnet" in sys.modules or not request_tile_permission():
        return False
    os.environ[VARIABLE] = AMX_ISA
    return True


def uses_amx(value: str) -> bool:
    """Whether a DNNL_MAX_CPU_ISA value lets oneDNN use AMX."""
    return value.upper().startswith(AMX_ISA)


def amx_enabled() -> bool:
    """Whether oneDNN in this process is allowed AMX (the variable says so and the CPU has it)."""
    return uses_amx(os.environ.get(VARIABLE, "")) and cpu_has_amx_int8()
