"""Shared measurement helpers of the benchmark scripts: peak RSS as the kernel sees it, machine info.

Torch's CPU allocations are invisible to ``tracemalloc``; the peak resident set (``VmHWM`` in
``/proc/self/status``, resettable through ``/proc/self/clear_refs``) sees them. Used by
``bench_teacher.py`` and ``bench_speed.py`` (tested in tests/test_bench_teacher.py).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

def parse_proc_status(text: str) -> dict[str, float]:
    """``VmRSS`` / ``VmHWM`` / ``VmPeak`` / ``VmSize`` of a ``/proc/<pid>/status`` text, in MiB."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "VmPeak", "VmSize"):
            parts = rest.split()
            if parts and parts[-1].lower() == "kb":
                out[key] = int(parts[0]) / 1024.0
    return out



class PeakRSS:
    """Peak resident memory of this process, as seen by the kernel (sees torch's allocations).

    ``reset()`` makes the next ``extra_mb()`` the peak RSS since the reset minus the RSS at the reset.
    Method ``vmhwm``: /proc/self/status VmHWM, reset via ``/proc/self/clear_refs`` (``5``).
    Method ``ru_maxrss`` (fallback): the high-water mark cannot be reset, so the extra is relative to
    the RSS at the first reset only. ``status_reader`` / ``clear`` are injectable for tests.
    """

    def __init__(self, status_reader: Callable[[], str] | None = None,
                 clear: Callable[[], None] | None = None, maxrss_mb: Callable[[], float] | None = None,
                 trim: Callable[[], None] | None = None):
        self._status = status_reader or (lambda: Path("/proc/self/status").read_text())
        self._clear = clear or _clear_refs
        self._trim = trim or _malloc_trim
        self._maxrss = maxrss_mb or _ru_maxrss_mb
        self.method = "vmhwm"
        self.base_mb: float | None = None

    def rss_mb(self) -> float:
        return parse_proc_status(self._status())["VmRSS"]

    def reset(self) -> None:
        self._trim()  # hand freed-but-resident heap back, so reusing it during the run counts again
        if self.method == "vmhwm":
            try:
                self._clear()
            except OSError:
                self.method = "ru_maxrss"
        if self.method == "ru_maxrss" and self.base_mb is not None:
            return  # the high-water mark cannot move back: keep the first baseline
        self.base_mb = self.rss_mb()

    def extra_mb(self) -> float:
        if self.base_mb is None:
            raise RuntimeError("call reset() first")
        peak = parse_proc_status(self._status())["VmHWM"] if self.method == "vmhwm" else self._maxrss()
        return max(0.0, peak - self.base_mb)

    def peak_mb(self) -> float:
        """Absolute peak RSS (MiB) since the last reset (or process start)."""
        return parse_proc_status(self._status())["VmHWM"] if self.method == "vmhwm" else self._maxrss()


def measure(fn: Callable[[], Any], probe: PeakRSS, clock: Callable[[], float] = time.perf_counter
            ) -> tuple[float, float, Any]:
    """Run ``fn()`` once: ``(wall seconds, peak extra MiB above the RSS at the start, result)``."""
    probe.reset()
    t0 = clock()
    result = fn()
    wall = clock() - t0
    return wall, probe.extra_mb(), result


def _clear_refs() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _malloc_trim() -> None:
    """glibc ``malloc_trim(0)``: return free heap pages to the OS (no-op where unavailable).

    Without it, memory freed earlier (input construction, a previous repeat) stays resident in
    glibc's heap and is silently reused, so a run's small and medium buffers (below glibc's dynamic
    mmap threshold, up to 32 MiB) would not raise the RSS high-water mark at all."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _ru_maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# ---------------------------------------------------------------------------------------------
# machine info
# ---------------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
            "mem_total_gib": mem, "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
