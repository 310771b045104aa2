"""``relgrad-bench``: time the full training step of every gradient mode over a range of dimensions.

A step is what the runner does per minibatch: ``zero_grad``, ``training_loss(...).backward()``, ``optimizer.step()``
with Adam (fused where available, as in the runner; glibc keeps freed memory for reuse unless
``--no-reuse-memory``). For each D one flow and one optimizer are shared by the gradient modes of a dense W
(relative, euclidean, autograd_logdet, no_logdet); ``self_normalizing`` trains a flow with learned inverses and
``lu`` the LU-parametrized twin, each with its own optimizer. The modes are interleaved repeat by repeat, so slow
drifts of a shared machine hit every mode alike. Reported per (D, mode):
the median and minimum of the timed steps after warm-up (each step synchronised: its latency), the pipelined time
per step (``--pipelined N``: N steps back to back with no synchronisation between them, as the runner's loop runs
them; on a GPU the launch overhead of one step hides behind the work of the one before), and the peak memory a step
allocates beyond what is live before it (CPU: the profiler's allocation events; CUDA: ``max_memory_allocated``), also
in units of one D×D matrix. ``--compile`` times each mode's training loss compiled by ``torch.compile`` (the
runner's ``trainer.compile=default``; compilation is not timed), ``--matmul-precision high`` lets float32 matmuls
use TF32 where the GPU has it (``trainer.matmul_precision=high``).

Budget: a step's cost at the next D is predicted as the previous time × (D/D_prev)³ (the worst case). A point that
would exceed the per-point budget with its warm-up and repeats runs 1 warm-up and fewer repeats (never fewer than
3; a step of seconds has little relative noise); one that cannot fit even that is marked ``skipped`` instead of run.

Fitted exponents are least-squares slopes of log(time) on log(D) over the points with D ≥ ``--fit-min-dim``, for
the whole step and for the log-det overhead (mode − floor: what the log-det term adds to plain backprop).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import functools
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

MODES = ("relative", "euclidean", "autograd_logdet", "no_logdet", "self_normalizing", "lu")
# The flow each mode trains: the gradient modes of a dense W share one; self_normalizing needs the learned inverses
# R (a flow of its own); ``lu`` is the LU-parametrized twin (W = P L U, ordinary gradients).
FAMILY = {"self_normalizing": "self_normalizing", "lu": "lu"}
FLOOR = "no_logdet"
DEFAULT_DIMS = (256, 512, 1024, 2048, 4096, 8192)
MIN_REPEATS = 3


def fit_exponent(dims: list[float], times: list[float]) -> float:
    """Least-squares slope of log(time) against log(D): time ≈ c·D^slope. NaN with fewer than two points."""
    if len(dims) < 2:
        return float("nan")
    lx = [math.log(d) for d in dims]
    ly = [math.log(t) for t in times]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sxx


@contextlib.contextmanager
def _quiet_fd2():
    """Silence file descriptor 2 (the profiler's native start/stop lines) for the duration of the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _step_memory(step, device) -> int:
    """Peak bytes allocated during one call of ``step`` beyond those live before it."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    from torch.profiler import ProfilerActivity, profile

    with _quiet_fd2(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # Allocations are attributed to the op that made them (its self memory); frees outside any op appear as
    # "[memory]" rows. Their running sum in start order is the live-bytes timeline (net within each op).
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    live = peak = 0
    for e in events:
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return int(peak)


def plan_repeats(step_s: float, warmup: int, repeats: int, budget_s: float) -> tuple[int, int] | None:
    """(warm-up steps, timed repeats) for a point whose step takes ``step_s`` seconds, within ``budget_s``:
    as asked when they fit; else 1 warm-up and as many repeats as fit (at least MIN_REPEATS); None (skip) when
    even 1 + MIN_REPEATS steps do not fit."""
    if step_s * (1 + MIN_REPEATS) > budget_s:
        return None
    if step_s * (warmup + repeats) > budget_s:
        return 1, max(MIN_REPEATS, min(repeats, int(budget_s / step_s) - 1))
    return warmup, repeats


def _step_timer(flows: dict[str, Any], x, losses: dict[str, Any], sync):
    """A function timing one full training step (zero_grad, loss, backward, optimizer step) in a given mode, or,
    with ``steps`` > 1, that many steps back to back with no synchronisation between them (the pipelined time per
    step: what a loop that never waits for the device gets); ``flows`` maps a family (see :data:`FAMILY`) to its
    (flow, optimizer), ``losses`` a mode to its training-loss function of x."""

    def step(mode: str, steps: int = 1) -> float:
        flow, opt = flows[FAMILY.get(mode, "dense")]
        loss = losses[mode]
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss(x).backward()
            opt.step()
        sync()
        return (time.perf_counter() - t0) / steps

    return step


def _loss_functions(flows: dict[str, Any], modes: list[str], compile: bool) -> dict[str, Any]:
    """Each mode's training loss as a function of the batch, compiled by ``torch.compile`` when asked (the runner's
    ``trainer.compile=default``)."""
    import torch

    from .flow import training_loss

    out = {}
    for mode in modes:
        flow = flows[FAMILY.get(mode, "dense")][0]
        fn = functools.partial(training_loss, flow, gradient="relative" if mode == "lu" else mode)
        out[mode] = torch.compile(fn, dynamic=False) if compile else fn
    return out


def _extra_matrices(modes: list[str]) -> int:
    """D×D matrices per layer beyond one flow's weights, gradients and Adam moments (see
    :func:`relgrad_cli.optim.estimate_training_bytes`) for the flows ``modes`` train side by side: 4 per further
    flow (its own weights, gradients and moments), 1 more for the temporary of an O(D³) mode, 4 for
    self_normalizing's learned inverses."""
    from .optim import CUBIC_MODES

    families = {FAMILY.get(m, "dense") for m in modes}
    extra = 4 * (len(families) - 1) + (1 if any(m in CUBIC_MODES for m in modes) else 0)
    return extra + (4 if "self_normalizing" in families else 0)


def run_benchmark(
    dims: list[int],
    modes: list[str],
    *,
    batch_size: int = 100,
    depth: int = 2,
    dtype: str = "float32",
    device: str = "auto",
    repeats: int = 7,
    warmup: int = 2,
    budget_s: float = 60.0,
    memory: bool = True,
    progress: bool = True,
    compile: bool = False,
    pipelined: int = 0,
) -> list[dict[str, Any]]:
    """Time every mode at every D; returns one record per (D, mode), in the order run. ``compile``: compile each
    mode's training loss first (its compilation is not timed). ``pipelined`` > 0: also time windows of that many
    steps run back to back (``pipelined_ms``: the time per step when nothing waits for the device between steps)."""
    import torch

    from .flow import InvertibleMLP
    from .optim import InsufficientMemory, check_training_memory, make_optimizer, resolve_device

    dev = resolve_device(device)
    dt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    last: dict[str, tuple[int, float]] = {}  # mode -> (D, median seconds) of its last measured point
    records: list[dict[str, Any]] = []
    for d in sorted(dims):
        try:  # every family's flow and Adam state live at once: refuse a D that cannot fit before allocating
            check_training_memory(d, depth, dtype, batch_size, dev, extra_matrices_per_layer=_extra_matrices(modes),
                                  advice="lower --dims or --depth, or use a machine with more memory")  # fmt: skip
        except InsufficientMemory as err:
            records += [{"dim": d, "mode": m, "status": "skipped", "times_ms": [], "reason": str(err)} for m in modes]
            if progress:
                print(f"relgrad-bench: D={d} skipped: {err}", file=sys.stderr, flush=True)
            continue
        torch.manual_seed(0)
        flows = {}
        for family in {FAMILY.get(m, "dense") for m in modes}:
            options = {"self_normalizing": {"gradient": "self_normalizing"}, "lu": {"dense": "lu"}}.get(family, {})
            flow = InvertibleMLP(d, depth, dtype=dt, device=dev, **options)
            flows[family] = (flow, make_optimizer(flow.parameters(), "adam", lr=1e-7))
        x = torch.randn(batch_size, d, dtype=dt, device=dev)

        losses = _loss_functions(flows, modes, compile)
        step = _step_timer(flows, x, losses, sync)
        if compile:  # compilation (seconds to a minute) is not a step: done before the budget sees a step
            for mode in modes:
                step(mode)

        active, recs, plan = [], {}, {}
        for mode in modes:
            rec = {"dim": d, "mode": mode, "status": "ok", "times_ms": []}
            recs[mode] = rec
            plan[mode] = (warmup, repeats)
            if mode in last:
                d0, t0 = last[mode]
                predicted = t0 * (d / d0) ** 3
                planned = plan_repeats(predicted, warmup, repeats, budget_s)
                if planned is None:
                    rec.update(status="skipped", reason=f"predicted {predicted:.1f} s a step; budget {budget_s:g} s")
                    continue
                plan[mode] = planned
            active.append(mode)
        for w in range(warmup):
            for mode in list(active):
                if w >= plan[mode][0]:
                    continue
                seconds = step(mode)
                if w == 0:
                    planned = plan_repeats(seconds, *plan[mode], budget_s)
                    if planned is None:
                        active.remove(mode)
                        recs[mode].update(
                            status="skipped", reason=f"one step took {seconds:.1f} s; budget {budget_s:g} s"
                        )
                    else:
                        plan[mode] = planned
        for r in range(repeats):
            for mode in active:
                if r < plan[mode][1]:
                    recs[mode]["times_ms"].append(1e3 * step(mode))
            if progress:
                print(f"\r  D={d}: repeat {r + 1}/{repeats}", end="", file=sys.stderr, flush=True)
        if progress:
            print("\r" + " " * 40 + "\r", end="", file=sys.stderr, flush=True)
        for mode in active:
            rec = recs[mode]
            rec["median_ms"] = statistics.median(rec["times_ms"])
            rec["min_ms"] = min(rec["times_ms"])
            last[mode] = (d, rec["median_ms"] / 1e3)
            if pipelined and plan_repeats(rec["median_ms"] / 1e3, 0, pipelined, budget_s) == (0, pipelined):
                rec["pipelined_ms"] = 1e3 * step(mode, pipelined)
            if memory:
                flow = flows[FAMILY.get(mode, "dense")][0]
                flow.zero_grad(set_to_none=True)
                peak = _step_memory(functools.partial(step, mode), dev)
                grads = sum(p.numel() for p in flow.parameters()) * flow.dtype.itemsize
                rec["peak_step_bytes"] = peak
                rec["peak_extra_dxd"] = (peak - grads) / (d * d * flow.dtype.itemsize)
        records.extend(recs.values())
        del flows, flow, x  # free this D's matrices before the next D allocates its own
    return records


def summarize(records: list[dict[str, Any]], fit_min_dim: int) -> dict[str, Any]:
    """Ratios per D and fitted exponents per mode."""
    by = {(r["dim"], r["mode"]): r for r in records if r["status"] == "ok"}
    dims = sorted({r["dim"] for r in records})
    ratios = []
    for d in dims:
        row: dict[str, Any] = {"dim": d}
        rel, floor = by.get((d, "relative")), by.get((d, FLOOR))
        for mode in MODES:
            r = by.get((d, mode))
            if r and floor and mode != FLOOR:
                row[f"{mode}/floor"] = r["median_ms"] / floor["median_ms"]
            if r and rel and mode not in ("relative", FLOOR):
                row[f"{mode}/relative"] = r["median_ms"] / rel["median_ms"]
        ratios.append(row)
    exponents, overhead = {}, {}
    for mode in MODES:
        pts = [(d, by[(d, mode)]["median_ms"]) for d in dims if (d, mode) in by and d >= fit_min_dim]
        if pts:
            exponents[mode] = fit_exponent([p[0] for p in pts], [p[1] for p in pts])
        extra = [(d, t - by[(d, FLOOR)]["median_ms"]) for d, t in pts if (d, FLOOR) in by and mode != FLOOR]
        if extra and all(e > 0 for _, e in extra):
            overhead[mode] = fit_exponent([p[0] for p in extra], [p[1] for p in extra])
    return {"ratios": ratios, "exponents": exponents, "overhead_exponents": overhead, "fit_min_dim": fit_min_dim}


def markdown(result: dict[str, Any]) -> str:
    """The benchmark as markdown: a time table (ms), a ratio table, and the fitted exponents."""
    meta, records = result["meta"], result["points"]
    modes = [m for m in MODES if any(r["mode"] == m for r in records)]
    dims = sorted({r["dim"] for r in records})
    by = {(r["dim"], r["mode"]): r for r in records}
    lines = [
        f"Median full training step (forward, backward, Adam), ms — B={meta['batch_size']}, depth {meta['depth']}, "
        f"{meta['dtype']}, {meta['device_name']}, {meta['threads']} threads, torch {meta['torch']}"
        f"{', compiled' if meta.get('compile') else ''}, matmul precision {meta.get('matmul_precision', 'highest')}",
        "",
        "| D | " + " | ".join(modes) + " |",
        "|---:|" + "---:|" * len(modes),
    ]
    for d in dims:
        cells = []
        for m in modes:
            r = by.get((d, m))
            cells.append(f"{r['median_ms']:.2f}" if r and r["status"] == "ok" else "skipped")
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    wanted = (
        "relative/floor",
        "self_normalizing/floor",
        "lu/floor",
        "euclidean/floor",
        "autograd_logdet/floor",
        "euclidean/relative",
        "autograd_logdet/relative",
        "self_normalizing/relative",
        "lu/relative",
    )
    piped = [m for m in modes if any("pipelined_ms" in r for r in records if r["mode"] == m)]
    if piped:
        title = f"Pipelined time per step, ms ({meta.get('pipelined')} steps back to back, no synchronisation between)"
        lines += ["", title, "", "| D | " + " | ".join(piped) + " |", "|---:|" + "---:|" * len(piped)]
        for d in dims:
            got = {m: by[(d, m)]["pipelined_ms"] for m in piped if "pipelined_ms" in by.get((d, m), {})}
            cells = [f"{got[m]:.3f}" if m in got else "–" for m in piped]
            lines.append(f"| {d} | " + " | ".join(cells) + " |")
    keys = [k for k in wanted if any(k in row for row in result["ratios"])]
    if keys:  # none when nothing was measured (every point skipped)
        lines += ["", "| D | " + " | ".join(keys) + " |", "|---:|" + "---:|" * len(keys)]
        for row in result["ratios"]:
            lines.append(f"| {row['dim']} | " + " | ".join(f"{row[k]:.2f}" if k in row else "–" for k in keys) + " |")
    exps = ", ".join(f"{m} {e:.2f}" for m, e in result["exponents"].items() if math.isfinite(e))
    lines += ["", f"Fitted exponents (time ∝ D^k, D ≥ {result['fit_min_dim']}): {exps or 'none (too few points)'}"]
    over = ", ".join(f"{m} {e:.2f}" for m, e in result.get("overhead_exponents", {}).items() if math.isfinite(e))
    if over:
        lines += [f"Exponents of the log-det overhead (mode − {FLOOR}): {over}"]
    refused = {r["dim"]: r["reason"] for r in records if "needs about" in str(r.get("reason", ""))}
    lines += [f"D={d} skipped: {reason}" for d, reason in sorted(refused.items())]
    mem = [r for r in records if "peak_extra_dxd" in r]
    if mem:
        top = max(r["dim"] for r in mem)
        cells = ", ".join(f"{r['mode']} {r['peak_extra_dxd']:.1f}" for r in mem if r["dim"] == top)
        lines += [f"Peak step allocation beyond the gradients at D={top}, in D×D matrices: {cells}"]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7, 5))
    for mode in MODES:
        pts = sorted((r["dim"], r["median_ms"]) for r in result["points"] if r["mode"] == mode and r["status"] == "ok")
        if not pts:
            continue
        k = result["exponents"].get(mode, float("nan"))
        label = f"{mode} (slope {k:.2f})" if math.isfinite(k) else mode
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
    dims = sorted({r["dim"] for r in result["points"]})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("dimension D")
    ax.set_ylabel("median step time (ms)")
    meta = result["meta"]
    ax.set_title(
        f"Training step, B={meta['batch_size']}, depth {meta['depth']}, {meta['dtype']}\n{meta['device_name']}"
    )
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing measured (every D skipped): no legend
        ax.legend(title=f"slopes over D ≥ {result['fit_min_dim']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="relgrad-bench",
        description="Time the training step of each gradient mode over D; print ratios to the plain-backprop "
        "floor and fitted exponents; write bench.json, bench.md and bench.png.",
    )
    p.add_argument("--dims", type=int, nargs="+", default=list(DEFAULT_DIMS), help="dimensions (default: %(default)s)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="gradient modes (default: all)")
    p.add_argument("--batch-size", type=int, default=100, help="minibatch size B (default: %(default)s)")
    p.add_argument("--depth", type=int, default=2, help="number of affine layers (default: %(default)s)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--repeats", type=int, default=7, help="timed steps per point (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per point first, ≥ 1 (default: %(default)s)")
    p.add_argument("--budget", type=float, default=60.0,
                   help="seconds a point may take; slower modes are skipped (default: %(default)s)")  # fmt: skip
    p.add_argument("--fit-min-dim", type=int, default=1024, help="fit exponents over D ≥ this (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-mode memory measurement")
    p.add_argument("--no-reuse-memory", action="store_true",
                   help="leave glibc's allocator at its defaults (see relgrad_cli.optim)")  # fmt: skip
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each mode's training loss (compilation not timed), as "
                        "trainer.compile=default")  # fmt: skip
    p.add_argument("--matmul-precision", choices=("highest", "high"), default="highest",
                   help="float32 matmul precision; high: TF32 on GPUs that have it (default: %(default)s)")  # fmt: skip
    p.add_argument("--pipelined", type=int, default=20, metavar="N",
                   help="also time N steps back to back without synchronising between them; 0: off "
                        "(default: %(default)s)")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="output folder (default: outputs/bench/<timestamp>)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    problems = [f"--dims {d}" for d in args.dims if d < 1]
    sizes = (("batch-size", args.batch_size), ("depth", args.depth), ("repeats", args.repeats),
             ("warmup", args.warmup))  # the budget check runs on the first warm-up step  # fmt: skip
    problems += [f"--{k} {v}" for k, v in sizes if v < 1]
    if args.budget <= 0:
        problems.append(f"--budget {args.budget}")
    if problems:
        print(f"relgrad-bench: error: {', '.join(problems)}: must be positive", file=sys.stderr)
        return 2
    if args.pipelined < 0:
        print(f"relgrad-bench: error: --pipelined {args.pipelined}: must be 0 (off) or a step count", file=sys.stderr)
        return 2
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision(args.matmul_precision)
    from .optim import resolve_device, reuse_freed_memory

    reused = reuse_freed_memory() if not args.no_reuse_memory else False
    try:
        dev = resolve_device(args.device)
    except (ValueError, RuntimeError) as err:
        print(f"relgrad-bench: error: --device {args.device}: {err}", file=sys.stderr)
        return 2
    out = args.out or Path("outputs") / "bench" / _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    out.mkdir(parents=True, exist_ok=True)
    cpu_name = f"CPU ({platform.processor() or platform.machine()})"
    meta = {
        "batch_size": args.batch_size, "depth": args.depth, "dtype": args.dtype, "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name,
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "torch": torch.__version__,
        "repeats": args.repeats, "warmup": args.warmup, "budget_s": args.budget, "reuse_memory": reused,
        "date": _dt.datetime.now().isoformat(timespec="seconds"), "compile": args.compile,
        "matmul_precision": args.matmul_precision, "pipelined": args.pipelined,
    }  # fmt: skip
    started = time.perf_counter()
    records = run_benchmark(args.dims, args.modes, batch_size=args.batch_size, depth=args.depth, dtype=args.dtype,
                            device=str(dev), repeats=args.repeats, warmup=args.warmup, budget_s=args.budget,
                            memory=not args.no_memory, compile=args.compile, pipelined=args.pipelined)  # fmt: skip
    meta["seconds"] = time.perf_counter() - started
    result = {"meta": meta, "points": records, **summarize(records, args.fit_min_dim)}
    from .tracking import write_json_atomic

    write_json_atomic(out / "bench.json", result)
    md = markdown(result)
    (out / "bench.md").write_text(md)
    plot(result, out / "bench.png")
    print(md)
    print(f"wrote {out / 'bench.json'}, bench.md, bench.png ({meta['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
