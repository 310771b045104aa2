"""Optimizer construction: fused where torch offers it, same updates as the plain implementation."""

from __future__ import annotations

import sys

import pytest
import torch

from relgrad_cli.optim import make_optimizer, reuse_freed_memory


@pytest.mark.parametrize("step", ["adam", "sgd"])
def test_fused_optimizer_matches_the_plain_one(step):
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(6, 6, dtype=torch.float64))
    b = torch.nn.Parameter(a.detach().clone())
    fused = make_optimizer([a], step, lr=0.1, momentum=0.9, weight_decay=0.01)
    cls = torch.optim.Adam if step == "adam" else torch.optim.SGD
    extra = {} if step == "adam" else {"momentum": 0.9}
    plain = cls([b], lr=0.1, weight_decay=0.01, **extra)
    assert fused.defaults.get("fused") is True  # this torch build has fused CPU kernels for both
    for _ in range(5):
        g = torch.randn(6, 6, dtype=torch.float64)
        a.grad, b.grad = g.clone(), g.clone()
        fused.step()
        plain.step()
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


def test_unknown_step_rule():
    with pytest.raises(ValueError, match="unknown step rule 'rmsprop'; choose adam or sgd"):
        make_optimizer([torch.nn.Parameter(torch.zeros(2))], "rmsprop", lr=0.1)


def test_reuse_freed_memory_applies_on_linux():
    assert reuse_freed_memory() is sys.platform.startswith("linux")
    x = torch.empty(4096, 4096)  # a 64 MiB block is served and freed normally afterwards
    x.fill_(1.0)
    assert float(x[0, 0]) == 1.0


def test_resolve_device():
    from relgrad_cli.optim import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device is available; use cpu or auto"):
            resolve_device("cuda:1")
