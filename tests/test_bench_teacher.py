"""Pure helpers of benchmarks/bench_teacher.py (no heavy runs here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bt():
    return load_benchmark("bench_teacher")


STATUS = """Name:\tpython
VmPeak:\t 2048000 kB
VmSize:\t 1024000 kB
VmHWM:\t  512000 kB
VmRSS:\t  256000 kB
Threads:\t2
"""


def test_parse_int_list(bt):
    assert bt.parse_int_list("32,64") == [32, 64]
    assert bt.parse_int_list(" 16 , 8,") == [16, 8]
    for bad in ("", "0", "32,-1", "a"):
        with pytest.raises(ValueError):
            bt.parse_int_list(bad)


def test_parse_proc_status(bt):
    st = bt.parse_proc_status(STATUS)
    assert st == {"VmPeak": 2000.0, "VmSize": 1000.0, "VmHWM": 500.0, "VmRSS": 250.0}


def test_ratio_and_ratios_by_grid(bt):
    assert bt.ratio(1.0, 4.0) == 0.25
    assert bt.ratio(None, 1.0) is None and bt.ratio(1.0, 0.0) is None and bt.ratio(1.0, None) is None
    rows = [
        {"grid": "64x64", "method": "naive", "wall_s": 10.0, "peak_extra_mb": 3000.0},
        {"grid": "64x64", "method": "exact", "wall_s": 20.0, "peak_extra_mb": 750.0},
        {"grid": "64x64", "method": "fast", "wall_s": 0.5, "peak_extra_mb": 0.0},
        {"grid": "32x32", "method": "naive", "wall_s": 1.0, "peak_extra_mb": 0.0},
        {"grid": "32x32", "method": "exact", "wall_s": 2.0, "peak_extra_mb": 5.0},
    ]
    r = bt.ratios_by_grid(rows)
    assert r["64x64"] == {"exact_over_naive_time": 2.0, "exact_over_naive_mem": 0.25,
                          "fast_over_naive_time": 0.05, "fast_over_naive_mem": 0.0,
                          "fast_over_exact_time": 0.025}
    assert r["32x32"] == {"exact_over_naive_time": 2.0, "exact_over_naive_mem": None}


def test_divergence_row_fields_and_rounding(bt):
    row = bt.divergence_row(64, 24, 64, 2, 1024, "exact", [3.0, 1.0, 2.0], 123.456, 1.23456e-7)
    assert tuple(row) == bt.CSV_FIELDS
    assert row["grid"] == "64x64" and row["wall_s"] == 2.0 and row["peak_extra_mb"] == 123.5
    assert row["repeats"] == 3
    assert row["max_abs_diff_vs_naive"] == pytest.approx(1.23e-7)
    none_row = bt.divergence_row(32, 1, 8, 1, 16, "naive", [0.1], None, None)
    assert none_row["peak_extra_mb"] is None and none_row["max_abs_diff_vs_naive"] is None


def test_budget_allows_another(bt):
    assert bt.budget_allows_another([], 10.0)
    assert bt.budget_allows_another([4.0], 10.0)            # 4 + 4 <= 10
    assert not bt.budget_allows_another([4.0, 4.0], 10.0)   # 8 + 4 > 10
    assert not bt.budget_allows_another([60.0], 100.0)
    assert bt.budget_allows_another([60.0, 70.0], 0.0)      # no budget


def test_format_table(bt):
    text = bt.format_table([{"a": 1, "b": 0.123456}, {"a": 22, "b": None}], ["a", "b"])
    lines = text.splitlines()
    assert len(lines) == 4 and lines[0].split() == ["a", "b"]
    assert lines[2].split() == ["1", "0.1235"] and lines[3].split() == ["22", "-"]
    assert len({len(line) for line in lines}) == 1  # fixed width


class FakeProc:
    """A fake /proc/self/status whose VmRSS / VmHWM the test moves by hand."""

    def __init__(self, rss: float):
        self.rss = self.hwm = rss
        self.clears = 0

    def status(self) -> str:
        return f"VmHWM:\t{int(self.hwm * 1024)} kB\nVmRSS:\t{int(self.rss * 1024)} kB\n"

    def clear(self) -> None:
        self.clears += 1
        self.hwm = self.rss

    def alloc(self, mb: float) -> None:
        self.rss += mb
        self.hwm = max(self.hwm, self.rss)

    def free(self, mb: float) -> None:
        self.rss -= mb


def test_peak_rss_vmhwm_and_measure(bt):
    proc = FakeProc(200.0)
    trims = []
    probe = bt.PeakRSS(status_reader=proc.status, clear=proc.clear, trim=lambda: trims.append(1))
    with pytest.raises(RuntimeError):
        probe.extra_mb()
    proc.alloc(1000.0)          # resident before the reset: not counted
    ticks = iter([10.0, 12.5])

    def work():
        proc.alloc(300.0)
        proc.free(300.0)
        return "ok"

    wall, extra, res = bt.measure(work, probe, clock=lambda: next(ticks))
    assert (wall, extra, res) == (2.5, 300.0, "ok") and probe.method == "vmhwm" and proc.clears == 1
    assert len(trims) == 1  # the heap is trimmed before every reset
    # a second, smaller run is measured on its own thanks to the reset
    wall, extra, _ = bt.measure(lambda: (proc.alloc(50.0), proc.free(50.0)), probe, clock=iter([0.0, 1.0]).__next__)
    assert extra == 50.0 and proc.clears == 2


def test_peak_rss_falls_back_to_ru_maxrss(bt):
    proc = FakeProc(100.0)
    peak = {"v": 100.0}

    def no_clear():
        raise PermissionError("read-only /proc")

    probe = bt.PeakRSS(status_reader=proc.status, clear=no_clear, maxrss_mb=lambda: peak["v"], trim=lambda: None)
    probe.reset()
    assert probe.method == "ru_maxrss" and probe.base_mb == 100.0
    peak["v"] = 400.0
    assert probe.extra_mb() == 300.0
    proc.rss = 150.0
    probe.reset()               # cannot reset the high-water mark: baseline stays the first one
    assert probe.base_mb == 100.0 and probe.extra_mb() == 300.0


def test_peak_rss_sees_a_real_torch_tensor(bt):
    """The real probe on this machine sees a (small) torch allocation that tracemalloc would miss."""
    torch = pytest.importorskip("torch")
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux /proc")
    probe = bt.PeakRSS()
    probe.reset()
    t = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
    extra = probe.extra_mb()
    del t
    assert 56.0 <= extra <= 96.0


def test_make_qk_is_seeded_and_scaled(bt):
    torch = pytest.importorskip("torch")
    (qp, kp), (qc, kc) = bt.make_qk(8, 2, 16, 2, seed=3, logit_std=2.0, step_noise=0.3)
    (qp2, _), _ = bt.make_qk(8, 2, 16, 2, seed=3, logit_std=2.0, step_noise=0.3)
    assert len(qp) == len(kc) == 2 and qp[0].shape == (2, 64, 16) and qp[0].dtype == torch.float32
    assert torch.equal(qp[0], qp2[0]) and not torch.equal(qp[0], qc[0])
    logits = (qp[0] @ kp[0].transpose(-1, -2)) * 16 ** -0.5
    assert 1.0 < float(logits.std()) < 3.5


def test_proc_stat_busy_and_others_share(bt):
    text = "cpu  100 20 30 1000 50 5 5 10 0 0\ncpu0 50 10 15 500 25 2 3 5 0 0\n"
    assert bt.parse_proc_stat_busy(text) == pytest.approx((100 + 20 + 30 + 5 + 5 + 10) / 100.0)
    with pytest.raises(ValueError):
        bt.parse_proc_stat_busy("intr 1 2 3\n")
    # 10 s on 2 cpus = 20 cpu-s capacity; 15 busy, 5 of them ours -> others 50 %
    assert bt.others_share(15.0, 5.0, 10.0, 2) == pytest.approx(0.5)
    assert bt.others_share(4.0, 5.0, 10.0, 2) == 0.0 and bt.others_share(1.0, 0.0, 0.0, 2) is None
