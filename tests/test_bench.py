"""relgrad-bench plumbing: every mode runs, the skip budget works, the files are complete. No speed is asserted."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from relgrad_cli.bench import MIN_REPEATS, MODES, fit_exponent, main, plan_repeats, run_benchmark, summarize


def test_fit_exponent_recovers_a_power_law():
    dims = [1024, 2048, 4096, 8192]
    assert fit_exponent(dims, [3e-7 * d**2.1 for d in dims]) == pytest.approx(2.1, abs=1e-12)
    assert fit_exponent(dims, [5e-9 * d**3 for d in dims]) == pytest.approx(3.0, abs=1e-12)
    assert math.isnan(fit_exponent([1024], [1.0]))


def test_every_mode_is_timed_and_measured():
    records = run_benchmark([8, 16], list(MODES), batch_size=5, repeats=2, warmup=1, progress=False)
    assert [(r["dim"], r["mode"]) for r in records] == [(d, m) for d in (8, 16) for m in MODES]
    for r in records:
        assert r["status"] == "ok" and len(r["times_ms"]) == 2 and r["median_ms"] > 0
        assert math.isfinite(r["peak_extra_dxd"]) and r["peak_step_bytes"] > 0
    s = summarize(records, fit_min_dim=8)
    assert set(s["exponents"]) == set(MODES)
    row = s["ratios"][1]
    at16 = {r["mode"]: r["median_ms"] for r in records if r["dim"] == 16}
    assert row["relative/floor"] == pytest.approx(at16["relative"] / at16["no_logdet"])
    assert row["autograd_logdet/relative"] == pytest.approx(at16["autograd_logdet"] / at16["relative"])
    assert row["self_normalizing/relative"] == pytest.approx(at16["self_normalizing"] / at16["relative"])
    assert row["lu/floor"] == pytest.approx(at16["lu"] / at16["no_logdet"])


def test_budget_skips_instead_of_hanging():
    # at D=4096 a cubic extrapolation from D=8 predicts far more than 5 s: skipped without running
    records = run_benchmark([8, 4096], ["autograd_logdet"], batch_size=5, repeats=2, warmup=1, budget_s=5,
                            memory=False, progress=False)  # fmt: skip
    assert records[0]["status"] == "ok"
    assert records[1]["status"] == "skipped" and "predicted" in records[1]["reason"]
    # a budget smaller than one step skips at the first dimension
    (rec,) = run_benchmark([8], ["relative"], repeats=2, warmup=1, budget_s=1e-9, memory=False, progress=False)
    assert rec["status"] == "skipped" and "one step took" in rec["reason"]


def test_cli_writes_json_markdown_and_plot(tmp_path, capsys):
    assert main(["--dims", "8", "16", "--repeats", "2", "--warmup", "1", "--fit-min-dim", "8",
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    result = json.loads((tmp_path / "bench.json").read_text())
    assert {"meta", "points", "ratios", "exponents", "overhead_exponents", "fit_min_dim"} <= result.keys()
    assert {"batch_size", "depth", "dtype", "device", "threads", "torch", "seconds"} <= result["meta"].keys()
    assert len(result["points"]) == 2 * len(MODES)
    md = (tmp_path / "bench.md").read_text()
    assert "| D | relative | euclidean | autograd_logdet | no_logdet | self_normalizing | lu |" in md
    assert "relative/floor" in md and "self_normalizing/floor" in md
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "relative/floor" in capsys.readouterr().out


def test_cli_rejects_bad_values(capsys):
    assert main(["--dims", "0", "8", "--out", "unused"]) == 2
    assert "--dims 0" in capsys.readouterr().err
    assert main(["--warmup", "0", "--out", "unused"]) == 2
    assert "--warmup 0" in capsys.readouterr().err


def test_help_does_not_import_torch():
    code = "import sys, relgrad_cli.bench, relgrad_cli.train, relgrad_cli.report; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_plan_repeats_fits_the_budget():
    assert plan_repeats(0.1, 2, 7, budget_s=60) == (2, 7)  # fits as asked
    assert plan_repeats(10.0, 2, 7, budget_s=60) == (1, 5)  # 1 warm-up + 5 repeats = 60 s
    assert plan_repeats(14.0, 2, 7, budget_s=60) == (1, MIN_REPEATS)  # 4 steps = 56 s
    assert plan_repeats(16.0, 2, 7, budget_s=60) is None  # 4 steps = 64 s: skip


def test_a_dimension_that_cannot_fit_is_skipped_before_allocating(tmp_path, monkeypatch, capsys):
    import relgrad_cli.optim as optim

    # 1 GB available: D=8 fits, D=100000 (about 320 GB of weights, gradients and Adam state) does not
    monkeypatch.setattr(optim, "available_memory_bytes", lambda device="cpu": 10**9)
    assert main(["--dims", "8", "100000", "--modes", "relative", "no_logdet", "--repeats", "2", "--warmup", "1",
                 "--no-memory", "--out", str(tmp_path)]) == 0  # fmt: skip
    points = json.loads((tmp_path / "bench.json").read_text())["points"]
    assert [(p["dim"], p["status"]) for p in points] == [(8, "ok"), (8, "ok"), (100000, "skipped"),
                                                         (100000, "skipped")]  # fmt: skip
    reason = points[-1]["reason"]
    assert reason.startswith("D=100000, depth 2, float32 needs about ") and "GB available" in reason
    assert "D=100000 skipped: D=100000, depth 2" in capsys.readouterr().err
    assert "D=100000 skipped:" in (tmp_path / "bench.md").read_text()
    # only D=100000 asked for: exits cleanly, nothing measured, the reason recorded
    assert main(["--dims", "100000", "--modes", "relative", "--out", str(tmp_path / "only")]) == 0
    (point,) = json.loads((tmp_path / "only" / "bench.json").read_text())["points"]
    assert point["status"] == "skipped" and "needs about" in point["reason"]
    md = (tmp_path / "only" / "bench.md").read_text()
    assert "| D |  |" not in md and "Fitted exponents (time ∝ D^k, D ≥ 1024): none (too few points)" in md


def test_training_memory_estimate(monkeypatch):
    import relgrad_cli.optim as optim
    from relgrad_cli.optim import InsufficientMemory, check_training_memory, estimate_training_bytes

    # weights, gradients and two Adam moments of two 1000×1000 float32 layers: 32 MB, plus a minibatch's activations
    base = estimate_training_bytes(1000, 2, 4, 100)
    assert 32e6 < base < 40e6
    assert estimate_training_bytes(1000, 2, 4, 100, extra_matrices_per_layer=1) == base + 2 * 1000 * 1000 * 4
    monkeypatch.setattr(optim, "available_memory_bytes", lambda device="cpu": 10**9)
    with pytest.raises(InsufficientMemory, match=r"^D=100000, depth 2, float32 needs about 320 GB .* has 1.0 GB"):
        check_training_memory(100000, 2, "float32", 100, "cpu", advice="x")
    assert check_training_memory(8, 2, "float32", 100, "cpu") > 0  # fits


def test_pipelined_and_compiled_steps_are_timed(tmp_path):
    """--compile compiles each mode's loss before timing, --pipelined N times N steps back to back, and
    --matmul-precision is recorded and restored; the pipelined table is in bench.md."""
    import torch

    before = torch.get_float32_matmul_precision()
    args = ["--dims", "8", "--modes", "relative", "no_logdet", "--repeats", "2", "--warmup", "1", "--no-memory"]
    assert main([*args, "--compile", "--pipelined", "3", "--matmul-precision", "high", "--out", str(tmp_path)]) == 0
    torch.set_float32_matmul_precision(before)
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["meta"]["compile"] is True and result["meta"]["matmul_precision"] == "high"
    assert all(p["status"] == "ok" and p["pipelined_ms"] > 0 for p in result["points"])
    md = (tmp_path / "bench.md").read_text()
    assert "compiled, matmul precision high" in md
    assert "Pipelined time per step, ms (3 steps back to back" in md and "| 8 | " in md.split("Pipelined")[1]


def test_no_pipelined_window_when_off_or_over_budget():
    (rec,) = run_benchmark([8], ["relative"], repeats=2, warmup=1, memory=False, progress=False, pipelined=0)
    assert "pipelined_ms" not in rec
    (rec,) = run_benchmark([8], ["relative"], repeats=2, warmup=1, memory=False, progress=False, pipelined=10**9)
    assert "pipelined_ms" not in rec  # 10⁹ steps do not fit the 60 s budget
