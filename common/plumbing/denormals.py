"""Subnormal ("denormal") floats flushed to zero on every CPU thread torch computes on.

`torch.set_flush_denormal(True)` sets the flush-to-zero and denormals-are-zero bits of the calling thread's MXCSR
register only. Torch's matmuls and elementwise kernels run on an OpenMP thread pool whose worker threads keep the
floating-point state they were created with, so once the pool exists (the first parallel op of the process), the
workers' share of every product still takes the CPU's slow path for subnormal operands. `flushed_denormals()` copies
the calling thread's floating-point environment (`fegetenv`) to every thread of torch's OpenMP pool by running libm's
`fesetenv` as the body of one OpenMP parallel region (`GOMP_parallel(fesetenv, &env)`), on entry and again on exit.
Where torch's OpenMP runtime cannot be found (not Linux, or another parallel backend), only the calling thread is set.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
from contextlib import contextmanager
from functools import cache

import torch

_FENV_BYTES = 64        # room for glibc's fenv_t (32 bytes on x86-64: the x87 state and MXCSR)


@cache
def _openmp_runtime() -> ctypes.CDLL | None:
    """The OpenMP runtime torch's thread pool lives in (libgomp, libiomp5 or libomp; all export the GNU entry point
    `GOMP_parallel`), among those mapped into this process (/proc/self/maps). Other packages bring their own copies
    (scikit-learn's wheel a libgomp-<hash>.so, with a pool of its own), so the choice is: a runtime inside torch's
    folder (pip wheels), else one under its plain name (the one torch linked from the system), else none."""
    if "OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if re.search(r"/lib(gomp|iomp5|omp)[^/]*\.so", line)}
    except OSError:
        return None
    torch_dir = os.path.dirname(os.path.realpath(torch.__file__)) + os.sep
    plain = re.compile(r"lib(gomp|iomp5|omp)\.so(\.\d+)*$")
    in_torch = sorted(p for p in paths if os.path.realpath(p).startswith(torch_dir))
    ranked = in_torch + sorted(p for p in paths if plain.fullmatch(os.path.basename(p)) and p not in in_torch)
    for path in ranked:
        lib = ctypes.CDLL(path)
        if hasattr(lib, "GOMP_parallel"):
            lib.GOMP_parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
            lib.GOMP_parallel.restype = None
            return lib
    return None


@cache
def _libm() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("m")
    return ctypes.CDLL(name) if name else None


def reaches_worker_threads() -> bool:
    """Whether `flushed_denormals` can set torch's OpenMP worker threads too (else the calling thread only)."""
    return _openmp_runtime() is not None and _libm() is not None


def _copy_fenv_to_workers() -> None:
    """Every thread of torch's OpenMP pool takes the calling thread's floating-point environment."""
    omp, libm = _openmp_runtime(), _libm()
    if omp is None or libm is None:
        return
    env = ctypes.create_string_buffer(_FENV_BYTES)
    if libm.fegetenv(env) != 0:
        return
    fesetenv = ctypes.cast(libm.fesetenv, ctypes.c_void_p)    # int fesetenv(const fenv_t *): run as fn(data)
    omp.GOMP_parallel(fesetenv, env, torch.get_num_threads(), 0)


def set_flush_denormal_all_threads(on: bool) -> bool:
    """`torch.set_flush_denormal(on)` on the calling thread and every OpenMP worker; False where the CPU has no
    flush (as torch's own call)."""
    supported = torch.set_flush_denormal(on)
    if supported:
        _copy_fenv_to_workers()
    return supported


@contextmanager
def flushed_denormals():
    """Subnormal floats (below 1.2e-38 in float32) read and written as zero on every thread torch computes on,
    then torch's default (subnormals kept) again, also after an error."""
    set_flush_denormal_all_threads(True)
    try:
        yield
    finally:
        set_flush_denormal_all_threads(False)
