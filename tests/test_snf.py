"""The self-normalizing gradient mode, checked in float64 against autograd of its surrogate objective."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from relgrad_cli import InvertibleMLP

f64 = torch.float64


def snf_flow(activation="spline", final="spline", depth=3, recon_weight=0.7, perturb=0.2, seed=0):
    torch.manual_seed(seed)
    flow = InvertibleMLP(5, depth, gradient="self_normalizing", recon_weight=recon_weight, activation=activation,
                         final_activation=final, dtype=f64)  # fmt: skip
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(perturb * torch.randn_like(p))  # R is no longer W⁻¹: every term of the update is non-zero
    return flow


def surrogate_gradients(flow: InvertibleMLP, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Autograd of the surrogate whose gradient the mode claims to compute:

    S = data(x) − Σ_k tr(sg(R_k) W_k) − Σ_k tr(sg(z_kᵀ gx_k) R_k) + Σ_k tr(sg(W_k) R_k) + λ Σ_k mean‖x_k − R_k W_k x_k‖²

    with data(x) = −mean[log p(z) + Σ log φ′] through ordinary linear layers, gx_k = ∂data/∂(layer input) and z_k the
    layer output minus its bias (both taken from a first autograd pass)."""
    params = dict(flow.named_parameters())
    x = x.clone().requires_grad_(True)  # the first layer's input gradient gx_0 enters R_0's update

    def data_part(inputs_out: list | None = None):
        h, logd = x, torch.zeros(x.shape[0], dtype=f64)
        maps = [*flow.activations, flow.final]
        for layer, m in zip(flow.layers, maps, strict=False):
            if inputs_out is not None:
                inputs_out.append(h)
            h = F.linear(h, layer.weight, layer.bias)
            if m is not None:
                h, ls = m(h)
                logd = logd + ls
        return -(flow.prior.log_prob(h).sum(-1) + logd).mean()

    inputs: list[torch.Tensor] = []
    data = data_part(inputs)
    gx = torch.autograd.grad(data, inputs, retain_graph=True)
    s = data
    lam = flow.recon_weight
    for k, layer in enumerate(flow.layers):
        w, b, r = layer.weight, layer.bias, layer.inverse_weight
        xk = inputs[k].detach()
        z = F.linear(xk, w.detach())  # the layer output minus its bias
        s = s - torch.trace(r.detach() @ w) - torch.trace((z.T @ gx[k]).detach() @ r) + torch.trace(w.detach() @ r)
        s = s + lam * (xk - F.linear(F.linear(xk, w), r)).square().sum(-1).mean()
        assert b is not None
    grads = torch.autograd.grad(s, list(params.values()))
    return dict(zip(params, grads, strict=True))


@pytest.mark.parametrize("activation,final", [("slrelu", "none"), ("spline", "spline"), ("slrelu_learned", "spline")])
@pytest.mark.parametrize("recon_weight", [0.0, 0.7])
def test_self_normalizing_gradients_match_autograd_of_the_surrogate(activation, final, recon_weight):
    flow = snf_flow(activation, final, recon_weight=recon_weight)
    x = torch.randn(11, 5, dtype=f64, generator=torch.Generator().manual_seed(1))
    expected = surrogate_gradients(flow, x)
    flow.zero_grad()
    flow.training_loss(x).backward()
    for name, p in flow.named_parameters():
        assert torch.allclose(p.grad, expected[name], atol=1e-11), name


def test_with_an_exact_inverse_the_weight_gradient_is_the_exact_one():
    """R = W⁻¹: Rᵀ = W⁻ᵀ and the reconstruction is exact (zero loss, zero gradient), so every W and b gets the
    Euclidean gradient of the exact NLL."""
    flow = snf_flow(recon_weight=1.0)
    with torch.no_grad():
        for layer in flow.layers:
            layer.set_weight(layer.weight.clone())  # R = W⁻¹
    x = torch.randn(13, 5, dtype=f64, generator=torch.Generator().manual_seed(2))
    flow.training_loss(x).backward()
    ref = InvertibleMLP(**{**flow.config(), "gradient": "autograd_logdet"}, dtype=f64)
    ref.load_state_dict({k: v for k, v in flow.state_dict().items() if "inverse_weight" not in k}, strict=True)
    (-ref.log_prob(x).mean()).backward()
    for (name, p), q in zip(ref.named_parameters(), [flow.get_parameter(n) for n, _ in ref.named_parameters()],
                            strict=True):  # fmt: skip
        assert torch.allclose(q.grad, p.grad, atol=1e-11), name


def test_learned_inverse_starts_exact_and_samples_approximately():
    torch.manual_seed(3)
    flow = InvertibleMLP(4, 2, gradient="self_normalizing", dtype=f64)
    for layer in flow.layers:
        assert torch.allclose(layer.inverse_weight @ layer.weight, torch.eye(4, dtype=f64), atol=1e-12)
    g = torch.Generator().manual_seed(0)
    exact = flow.sample(6, generator=torch.Generator().manual_seed(0))
    approx = flow.sample(6, generator=g, approximate=True)
    assert torch.allclose(exact, approx, atol=1e-10)
    with pytest.raises(ValueError, match="learned inverse"):
        InvertibleMLP(4, 2, dtype=f64).sample(2, approximate=True)
    # evaluation is exact whatever R is: log_prob uses W only
    with torch.no_grad():
        flow.layers[0].inverse_weight.mul_(3.0)
    ref = InvertibleMLP(**{**flow.config(), "gradient": "relative"}, dtype=f64)
    ref.load_state_dict({k: v for k, v in flow.state_dict().items() if "inverse_weight" not in k})
    x = torch.randn(5, 4, dtype=f64)
    assert torch.allclose(flow.log_prob(x), ref.log_prob(x), atol=1e-12)


def test_self_normalizing_trains_through_the_runner(tmp_path):
    from test_train import TINY, make_cfg

    from relgrad_cli.models import load_model
    from relgrad_cli.train import run

    common = ["trainer.max_epochs=6", "trainer.dtype=float64", *TINY]
    snf = run(make_cfg(["optim=self_normalizing", *common]), run_dir=tmp_path / "snf")
    untrained = run(make_cfg(["optim=self_normalizing", "optim.lr=1e-12", *common]), run_dir=tmp_path / "zero")
    assert snf["gradient"] == "self_normalizing" and snf["test_ll"] > untrained["test_ll"] + 0.5
    flow = load_model(tmp_path / "snf" / "checkpoints" / "best.pt")
    for layer in flow.layers:  # the reconstruction loss kept R close to W⁻¹
        with torch.no_grad():
            err = (layer.inverse_weight @ layer.weight - torch.eye(4, dtype=f64)).abs().max()
        assert float(err) < 0.1  # measured: 0.058 after 6 epochs


def test_self_normalizing_gradient_follows_loss_scale():
    """The Rᵀ and Wᵀ terms take their coefficient from autograd: (S·loss).backward() gives S times the gradient."""
    flow = snf_flow()
    x = torch.randn(7, 5, dtype=f64, generator=torch.Generator().manual_seed(4))
    flow.training_loss(x).backward()
    g1 = [p.grad.clone() for p in flow.parameters()]
    flow.zero_grad()
    (-3.5 * flow.training_loss(x)).backward()
    for a, p in zip(g1, flow.parameters(), strict=True):
        assert torch.allclose(p.grad, -3.5 * a, rtol=1e-12, atol=1e-14)


def test_a_flow_without_learned_inverses_refuses_the_mode():
    flow = InvertibleMLP(4, 2, dtype=f64)
    with pytest.raises(ValueError, match="learned_inverse=True"):
        flow.layers[0](torch.zeros(2, 4, dtype=f64), "self_normalizing")
