"""Every term of every generator method against functions differentiated by hand (STYLE.md: DeepBSDE#7)."""
import math

import pytest
import torch

import hjbcourse as hjb

B, D, M = 7, 4, 3


def data(seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=torch.float64)
    f = torch.randn(B, D, generator=g, dtype=torch.float64)
    S = torch.randn(B, D, M, generator=g, dtype=torch.float64)
    return x.to(device), f.to(device), S.to(device)


def quadratic(device):
    g = torch.Generator().manual_seed(1)
    Mq = torch.randn(D, D, generator=g, dtype=torch.float64)
    Mq = (Mq + Mq.T).to(device)
    b = torch.randn(D, generator=g, dtype=torch.float64).to(device)
    V = lambda x: (0.5 * ((x @ Mq) * x).sum(-1) + x @ b).unsqueeze(-1)
    grad = lambda x: x @ Mq + b
    hess = lambda x: Mq.expand(x.shape[0], D, D)
    return V, grad, hess


def cubic(device):
    c = torch.tensor([0.5, -1.0, 2.0, 0.3], dtype=torch.float64, device=device)
    V = lambda x: ((c * x ** 3).sum(-1) + x[:, 0] * x[:, 1] * x[:, 2]).unsqueeze(-1)

    def grad(x):
        g = 3 * c * x ** 2
        g[:, 0] += x[:, 1] * x[:, 2]
        g[:, 1] += x[:, 0] * x[:, 2]
        g[:, 2] += x[:, 0] * x[:, 1]
        return g

    def hess(x):
        H = torch.diag_embed(6 * c * x)
        for i, j, k in ((0, 1, 2), (0, 2, 1), (1, 2, 0)):
            H[:, i, j] += x[:, k]
            H[:, j, i] += x[:, k]
        return H

    return V, grad, hess


def by_hand(grad, hess, x, f, S):
    drift = (grad(x) * f).sum(-1)
    trace = torch.einsum("bij,bik,bjk->b", hess(x), S, S)     # Tr(S S' H) = sum_j s_j' H s_j
    return (drift + 0.5 * trace).unsqueeze(-1)


@pytest.mark.parametrize("fn", [quadratic, cubic])
@pytest.mark.parametrize("method", ["autograd", "forward"])
def test_exact_methods_match_hand_derivatives(fn, method, device):
    V, grad, hess = fn(device)
    x, f, S = data(device=device)
    out = hjb.apply_generator(V, x, f, S, method=method)
    assert out.shape == (B, 1)
    assert torch.allclose(out, by_hand(grad, hess, x, f, S), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("fn", [quadratic, cubic])
def test_each_term_separately(fn, device):
    """S = 0 leaves grad V . f alone; f = 0 leaves 1/2 Tr(S S' H) alone (the factor 1/2 included)."""
    V, grad, hess = fn(device)
    x, f, S = data(device=device)
    for method in ("autograd", "forward", "hutchinson"):
        drift_only = hjb.apply_generator(V, x, f, torch.zeros_like(S), method=method, generator=0)
        assert torch.allclose(drift_only.squeeze(-1), (grad(x) * f).sum(-1), atol=1e-10)
    e1 = torch.zeros(B, D, 1, dtype=torch.float64, device=device)
    e1[:, 0, 0] = 1.0
    for method in ("autograd", "forward", "hutchinson"):   # one column: Hutchinson is exact (z^2 = 1)
        diff_only = hjb.apply_generator(V, x, torch.zeros_like(f), e1, method=method, generator=0)
        assert torch.allclose(diff_only.squeeze(-1), 0.5 * hess(x)[:, 0, 0], atol=1e-10)


@pytest.mark.parametrize("fn", [quadratic, cubic])
def test_hutchinson_is_unbiased(fn, device):
    V, grad, hess = fn(device)
    x, f, S = data(device=device)
    n = 4000
    xr, fr, Sr = x[:1].repeat(n, 1), f[:1].repeat(n, 1), S[:1].repeat(n, 1, 1)   # one probe per row
    est = hjb.apply_generator(V, xr, fr, Sr, method="hutchinson", n_probes=1, generator=123).squeeze(-1)
    truth = by_hand(grad, hess, x[:1], f[:1], S[:1]).item()
    se = est.std().item() / math.sqrt(n)
    assert se > 0
    assert abs(est.mean().item() - truth) < 3 * se


def test_mlp_methods_agree(device):
    torch.manual_seed(0)
    net = hjb.MLP(D, 1, width=32, depth=3, activation="tanh", in_low=-2, in_high=2).double().to(device)
    x, f, S = data(device=device)
    ref = hjb.apply_generator(net, x, f, S, method="autograd")
    fast = hjb.apply_generator(net, x, f, S, method="forward")
    hvp = hjb.apply_generator(lambda y: net(y), x, f, S, method="forward")     # no forward pass: HVP columns
    assert torch.allclose(ref, fast, atol=1e-10, rtol=0)
    assert torch.allclose(ref, hvp, atol=1e-10, rtol=0)
    # the training gradients agree too (create_graph=True keeps the graph through the parameters)
    # (the output bias drops out of every derivative, so its gradient is None for both)
    params = list(net.parameters())
    g_ref = torch.autograd.grad(ref.pow(2).sum(), params, allow_unused=True)
    g_fast = torch.autograd.grad(fast.pow(2).sum(), params, allow_unused=True)
    assert sum(a is not None for a in g_ref) == len(params) - 1
    for a, b in zip(g_ref, g_fast):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("activation", ["tanh", "softplus", "silu"])
def test_forward_laplacian_every_activation(activation):
    torch.manual_seed(1)
    net = hjb.MLP(D, 1, width=16, depth=2, activation=activation).double()
    x, f, S = data(2)
    assert torch.allclose(hjb.apply_generator(net, x, f, S, "autograd"), hjb.apply_generator(net, x, f, S, "forward"), atol=1e-10)


def test_hutchinson_on_mlp_converges_to_exact():
    torch.manual_seed(0)
    net = hjb.MLP(D, 1, width=32, depth=2).double()
    x, f, S = data(3)
    exact = hjb.apply_generator(net, x, f, S, "forward", create_graph=False)
    est = hjb.apply_generator(net, x, f, S, "hutchinson", n_probes=20000, generator=0, create_graph=False)
    assert torch.allclose(exact, est, atol=0.05 * exact.abs().max().item())


def test_value_derivatives_and_precomputed_generator():
    V, grad, hess = cubic("cpu")
    x, f, S = data(4)
    v, g, H = hjb.generator.value_derivatives(V, x)
    assert torch.allclose(g, grad(x)) and torch.allclose(H, hess(x)) and not g.requires_grad
    assert torch.allclose(hjb.generator.generator_from_derivatives(g, H, f, S), by_hand(grad, hess, x, f, S))


def test_create_graph_false_detaches():
    net = hjb.MLP(D, 1, width=8, depth=1).double()
    x, f, S = data(5)
    for method in ("autograd", "forward", "hutchinson"):
        assert not hjb.apply_generator(net, x, f, S, method, generator=0, create_graph=False).requires_grad


def test_bad_shapes_and_methods_are_named():
    net = hjb.MLP(D, 1, width=8, depth=1).double()
    x, f, S = data(6)
    with pytest.raises(ValueError, match="f must have shape"):
        hjb.apply_generator(net, x, f[:, :2], S)
    with pytest.raises(ValueError, match="S must have shape"):
        hjb.apply_generator(net, x, f, S[:, :2])
    with pytest.raises(ValueError, match="method"):
        hjb.apply_generator(net, x, f, S, method="loop")
    with pytest.raises(ValueError, match="n_probes"):
        hjb.apply_generator(net, x, f, S, method="hutchinson", n_probes=0)
    with pytest.raises(ValueError, match="V must map"):
        hjb.apply_generator(lambda y: y, x, f, S, method="autograd")


def test_shared_diffusion_equals_the_same_matrix_for_every_state(device):
    """S of shape (d, m) is one matrix for all states: every method gives what the expanded (B, d, m) gives.
    Hutchinson's probes are the same draws either way (same seed), so even its estimate agrees to round-off,
    although the shared path never forms S z."""
    torch.manual_seed(0)
    net = hjb.MLP(D, 1, width=32, depth=3).double().to(device)
    x, f, _ = data(7, device)
    S = torch.randn(D, M, generator=torch.Generator().manual_seed(8), dtype=torch.float64).to(device)
    for V in (net, lambda y: net(y)):                           # with and without the forward-Laplacian pass
        for method in hjb.GENERATOR_METHODS:
            a = hjb.apply_generator(V, x, f, S, method=method, n_probes=5, generator=3)
            b = hjb.apply_generator(V, x, f, S.expand(B, D, M), method=method, n_probes=5, generator=3)
            assert torch.allclose(a, b, atol=1e-11, rtol=0), method
    # training gradients through the shared path, in the weights and in S itself
    S_ = S.clone().requires_grad_(True)
    S_b = S.clone().requires_grad_(True)
    params = list(net.parameters())
    ga = torch.autograd.grad(hjb.apply_generator(net, x, f, S_, "hutchinson", n_probes=5, generator=3).pow(2).sum(),
                             params + [S_], allow_unused=True)
    gb = torch.autograd.grad(hjb.apply_generator(net, x, f, S_b.expand(B, D, M), "hutchinson", n_probes=5,
                                           generator=3).pow(2).sum(), params + [S_b], allow_unused=True)
    for u, v in zip(ga, gb):
        assert (u is None) == (v is None) and (u is None or torch.allclose(u, v, atol=1e-10, rtol=0))
    with pytest.raises(ValueError, match=r"or \(4, m\) when shared"):
        hjb.apply_generator(net, x, f, S[:2])
    _, g, H = hjb.generator.value_derivatives(net, x)
    assert torch.allclose(hjb.generator.generator_from_derivatives(g, H, f, S),
                          hjb.generator.generator_from_derivatives(g, H, f, S.expand(B, D, M)), atol=1e-12, rtol=0)


def test_rademacher_signs_are_fair_reproducible_and_any_shape():
    from hjbcourse.generator import _rademacher
    like = torch.zeros(1, dtype=torch.float64)
    z = _rademacher((3, 5, 7), torch.Generator().manual_seed(0), like)           # 105 signs: not a multiple of 8
    assert z.shape == (3, 5, 7) and z.dtype == torch.float64
    assert set(z.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(z, _rademacher((3, 5, 7), torch.Generator().manual_seed(0), like))
    n = 80_000
    w = _rademacher((n,), torch.Generator().manual_seed(1), like.float())
    assert w.dtype == torch.float32
    se = n ** -0.5
    assert abs(w.mean().item()) < 4 * se                        # fair
    for lag in (1, 2, 7, 8, 9):                                  # no pattern within or across the bytes
        assert abs((w[:-lag] * w[lag:]).mean().item()) < 4 * se
