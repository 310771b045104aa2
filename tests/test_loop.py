"""The training loop as a GPU would want it, checked on the CPU: no host reads between read points, a compiled step
with the eager gradients, full-precision evaluation with one float64 log-det per pass."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from relgrad_cli import fit as fit_module
from relgrad_cli.fit import fit, full_precision, log_likelihoods
from relgrad_cli.flow import InvertibleMLP
from relgrad_cli.tracking import NullTracker

READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")


def _problem(dim: int = 4, dtype: torch.dtype = torch.float32, **flow_kw):
    torch.manual_seed(0)
    flow = InvertibleMLP(dim, 2, prior="laplace", dtype=dtype, **flow_kw)
    flow.check_inputs = False  # as in the runner, which checks the data once
    data = torch.randn(2100, dim, dtype=dtype, generator=torch.Generator().manual_seed(1))
    return flow, data[:2000], data[2000:]


def _fit(flow, train, val, tmp_path, **kw):
    args = dict(max_epochs=1, batch_size=10, patience=5, eval_every=1, eval_batch_size=1000, log_every=50,
                tracker=NullTracker(), checkpoint_dir=tmp_path / "checkpoints",
                generator=torch.Generator().manual_seed(0), progress=False)  # fmt: skip
    args.update(kw)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3, fused=True)
    return fit(flow, optimizer, train, val, **args)


@pytest.mark.parametrize("log_every", [50, 200])
def test_the_loop_reads_the_device_at_most_once_per_log_window(log_every, monkeypatch, tmp_path):
    """Every host read of a tensor's value (item, tolist, float, int, bool, index) made while fit() trains — the
    validations and checkpoint writes left out, and the relative gradient's read of its CPU scalar (free on the CPU,
    never made for a GPU tensor: see the next test) — is counted: 200 steps give at most 200 / log_every reads."""
    reads, quiet = [], [0]

    def counting(name, original):
        def read(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_name
            if not quiet[0] and caller != "_host_scalar":  # reads CPU tensors only: free, never on a GPU
                reads.append(f"{name} in {caller}")
            return original(self, *args, **kwargs)

        return read

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))

    def unread(original):
        def call(*args, **kwargs):
            quiet[0] += 1
            try:
                return original(*args, **kwargs)
            finally:
                quiet[0] -= 1

        return call

    for name in ("log_likelihoods", "save_checkpoint", "mean_and_2se"):
        monkeypatch.setattr(fit_module, name, unread(getattr(fit_module, name)))
    flow, train, val = _problem()
    state = _fit(flow, train, val, tmp_path, log_every=log_every)
    assert state.step == 200 and math.isfinite(state.best_val_ll)
    assert 1 <= len(reads) <= 200 // log_every, reads


def test_the_log_det_coefficient_is_read_only_from_a_cpu_tensor_outside_compilation():
    from relgrad_cli.relative import _host_scalar

    assert _host_scalar(torch.tensor(-2.0)) == -2.0
    assert _host_scalar(torch.empty((), device="meta")) is None  # any other device: kept as a tensor
    assert torch.compile(lambda c: c * (_host_scalar(c) is None), fullgraph=True)(torch.tensor(3.0)) == 3.0


def test_a_compiled_step_traces_whole_and_gives_the_eager_gradients():
    """torch.compile(fullgraph=True) of the training loss — the relative gradient's and the smooth leaky-ReLU's
    autograd Functions, the spline — traces without a graph break (no host read under compilation) and its
    backward gives the eager gradients in float64."""
    torch.manual_seed(0)
    flow = InvertibleMLP(6, 3, prior="laplace", dtype=torch.float64, final_activation="spline", gradient="relative")
    flow.check_inputs = False
    x = torch.randn(40, 6, dtype=torch.float64)
    flow.training_loss(x).backward()
    eager = {k: p.grad.clone() for k, p in flow.named_parameters()}
    flow.zero_grad(set_to_none=True)
    torch.compile(flow.training_loss, fullgraph=True, dynamic=False)(x).backward()
    for k, p in flow.named_parameters():
        torch.testing.assert_close(p.grad, eager[k], rtol=1e-12, atol=1e-12, msg=k)


def test_fit_with_compile_follows_the_eager_run(tmp_path):
    """trainer.compile=default and reduce-overhead (on the CPU: no CUDA graph, the same compiled code): the compiled
    full batches and the eager last partial one (995 rows, batches of 10) train to the eager run's weights."""
    runs = {}
    for mode in ("none", "default", "reduce-overhead"):
        flow, train, val = _problem(dtype=torch.float64)
        state = _fit(flow, train[:995], val, tmp_path / mode, compile=mode, max_epochs=2)
        runs[mode] = (state, flow.state_dict())
    for mode in ("default", "reduce-overhead"):
        assert runs["none"][0].step == runs[mode][0].step == 200
        for k, v in runs["none"][1].items():
            torch.testing.assert_close(runs[mode][1][k], v, rtol=1e-9, atol=1e-11, msg=f"{mode}: {k}")


def test_evaluation_computes_each_log_det_once_in_float64(monkeypatch):
    """log_likelihoods on 2 000 rows in chunks of 300: one slogdet per layer (not per chunk), of the float64
    weights; the result is log p(x) of the float64 flow to float32's per-row accuracy."""
    flow, _, val = _problem(dim=16)
    x = torch.randn(2000, 16)
    seen = []
    slogdet = torch.linalg.slogdet

    def counted(a, *args, **kwargs):
        seen.append(a.dtype)
        return slogdet(a, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "slogdet", counted)
    ll = log_likelihoods(flow, x, batch_size=300)
    assert seen == [torch.float64] * flow.depth
    monkeypatch.setattr(torch.linalg, "slogdet", slogdet)
    with torch.no_grad():
        exact = flow.to(torch.float64).log_prob(x.double())
    assert ll.dtype == exact.numpy().dtype and ll.shape == (2000,)
    torch.testing.assert_close(torch.from_numpy(ll), exact, rtol=1e-5, atol=1e-4)


def test_logabsdet_of_chosen_layers_in_a_chosen_dtype():
    flow, _, _ = _problem(dim=5, dtype=torch.float64)
    per_layer = [float(torch.linalg.slogdet(layer.weight.detach()).logabsdet) for layer in flow.layers]
    assert float(flow.logabsdet()) == pytest.approx(sum(per_layer), abs=1e-12)
    assert float(flow.logabsdet(layers=[1])) == pytest.approx(per_layer[1], abs=1e-12)
    assert float(flow.logabsdet(layers=[])) == 0.0
    assert flow.to(torch.float32).logabsdet(torch.float64).dtype == torch.float64


def test_training_matmul_precision_is_set_for_training_and_evaluation_runs_at_full_precision(monkeypatch, tmp_path):
    """matmul_precision=high holds while training steps run; every evaluation runs at "highest"; the setting from
    before fit() is back afterwards."""
    seen = {"train": set(), "eval": set()}
    loss = InvertibleMLP.training_loss
    rows = InvertibleMLP.log_prob_rows

    def train_loss(self, x):
        seen["train"].add(torch.get_float32_matmul_precision())
        return loss(self, x)

    def eval_rows(self, x):
        seen["eval"].add(torch.get_float32_matmul_precision())
        return rows(self, x)

    monkeypatch.setattr(InvertibleMLP, "training_loss", train_loss)
    monkeypatch.setattr(InvertibleMLP, "log_prob_rows", eval_rows)
    flow, train, val = _problem()
    before = torch.get_float32_matmul_precision()
    _fit(flow, train[:200], val, tmp_path, matmul_precision="high")
    assert seen == {"train": {"high"}, "eval": {"highest"}}
    assert torch.get_float32_matmul_precision() == before
    with full_precision():
        assert torch.get_float32_matmul_precision() == "highest"


def test_a_compiler_that_fails_leaves_one_line_and_training_goes_on_uncompiled(monkeypatch, capsys, tmp_path):
    """As without a C++ compiler: the first compiled call fails; fit() says so in one line and trains eagerly, to
    the eager run's weights."""

    def no_compiler(fn, **kwargs):
        def broken(x):
            raise RuntimeError("InductorError: CppCompileError: C++ compile error\n  no such file: g++")

        return broken

    flow, train, val = _problem(dtype=torch.float64)
    _fit(flow, train[:500], val, tmp_path / "eager")
    eager = flow.state_dict()
    monkeypatch.setattr(torch, "compile", no_compiler)
    flow, train, val = _problem(dtype=torch.float64)
    _fit(flow, train[:500], val, tmp_path / "broken", compile="default")
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert err == ["warning: trainer.compile=default failed (RuntimeError: InductorError: CppCompileError: C++ compile "
                   "error no such file: g++); training without compilation"]  # fmt: skip
    for k, v in eager.items():
        assert torch.equal(flow.state_dict()[k], v), k


@pytest.mark.parametrize("gradient", ["relative", "euclidean", "self_normalizing"])
def test_a_step_computes_no_function_signature(gradient, monkeypatch):
    """torch's Function.apply binds its arguments to inspect.signature(forward) on every call; the layers' Functions
    carry their signature, so a training step (forward and backward) computes none."""
    import inspect

    torch.manual_seed(0)
    flow = InvertibleMLP(5, 2, gradient=gradient)
    x = torch.randn(20, 5)
    flow.training_loss(x).backward()
    computed = []
    original = inspect._signature_from_function

    def counting(*args, **kwargs):
        computed.append(args[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(inspect, "_signature_from_function", counting)
    flow.training_loss(x).backward()
    assert computed == []
