"""The MLP's forward-Laplacian pass (a hand-written backward, run in cache-sized chunks on a CPU) against
plain autograd: values, directional derivatives, the Laplacian sum, and the gradients of all three."""
import pytest
import torch

import hjbcourse as hjb

B, D, P, M = 9, 4, 2, 3


def setup_case(depth, seed=0, device="cpu", out_dim=1):
    torch.manual_seed(seed)
    net = hjb.MLP(D, out_dim, width=12, depth=depth, activation="tanh", in_low=-2, in_high=3,
                  out_scale=1.7, out_shift=0.3).double().to(device)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(B, D, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    first = torch.randn(B, D, P, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    second = torch.randn(B, D, M, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    return net, x, first, second


def by_autograd(net, x, first, second):
    """y, [J v_1..J v_p, J s_1..J s_m] and sum_j s_j' Hess y s_j with autograd (create_graph: differentiable)."""
    y = net(x)
    dirs = torch.cat([first, second], -1)
    dys, laps = [], []
    for o in range(y.shape[1]):
        (g,) = torch.autograd.grad(y[:, o].sum(), x, create_graph=True)
        dys.append(torch.einsum("bd,bdk->bk", g, dirs))
        lap = 0
        for j in range(second.shape[-1]):
            (hs,) = torch.autograd.grad((g * second[:, :, j]).sum(), x, create_graph=True)
            lap = lap + (hs * second[:, :, j]).sum(-1)
        laps.append(lap)
    return y, torch.stack(dys, 1), torch.stack(laps, 1)


def assert_same_values_and_gradients(out, ref, inputs, g, device):
    """``out`` equals ``ref`` entry by entry, and so do the gradients of a random linear function of all their
    entries (weights drawn from ``g``) in every tensor of ``inputs``."""
    for a, b in zip(out, ref):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-11, rtol=0)
    w = [torch.randn(r.shape, generator=g, dtype=torch.float64).to(device) for r in ref]
    g_ref = torch.autograd.grad(sum((wi * r).sum() for wi, r in zip(w, ref)), inputs, allow_unused=True)
    g_out = torch.autograd.grad(sum((wi * o).sum() for wi, o in zip(w, out)), inputs, allow_unused=True)
    for a, b in zip(g_out, g_ref):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("chunk_rows", [None, 5, 20, -1])      # 5 rows: one state per chunk; 20: uneven chunks
def test_values_and_every_gradient_match_autograd(depth, chunk_rows, device):
    net, x, first, second = setup_case(depth, device=device, out_dim=2)
    ref = by_autograd(net, x, first, second)
    out = net.forward_laplacian(x, first, second, chunk_rows=chunk_rows)
    # gradients in the parameters, x and both sets of directions
    inputs = [x, first, second] + [p for p in net.parameters() if p.requires_grad]
    assert_same_values_and_gradients(out, ref, inputs, torch.Generator().manual_seed(7), device)


def test_second_gradients_false_and_no_first_directions():
    net, x, first, second = setup_case(3)
    y, dy, lap = net.forward_laplacian(x, first, second)
    y2, dy2, lap2 = net.forward_laplacian(x, first, second, second_gradients=False)
    assert dy2.shape == (B, 1, P) and torch.allclose(dy2, dy[:, :, :P], atol=1e-13, rtol=0)
    assert torch.allclose(lap2, lap, atol=1e-13, rtol=0) and torch.allclose(y2, y)
    y3, dy3, lap3 = net.forward_laplacian(x, None, second)
    assert torch.allclose(dy3, dy[:, :, P:], atol=1e-13, rtol=0) and torch.allclose(lap3, lap, atol=1e-13, rtol=0)
    _, dy4, lap4 = net.forward_laplacian(x, None, second, second_gradients=False)
    assert dy4.shape == (B, 1, 0) and torch.allclose(lap4, lap, atol=1e-13, rtol=0)


def test_no_grad_gives_the_same_numbers_and_keeps_nothing():
    net, x, first, second = setup_case(2)
    y, dy, lap = net.forward_laplacian(x, first, second)
    with torch.no_grad():
        out = net.forward_laplacian(x, first, second)
    assert not any(t.requires_grad for t in out)
    for a, b in zip(out, (y, dy, lap)):
        assert torch.equal(a, b.detach())


def test_chunking_does_not_change_float32_numbers_beyond_rounding():
    torch.manual_seed(3)
    net = hjb.MLP(6, 1, width=32, depth=3)
    g = torch.Generator().manual_seed(4)
    x, f, S = torch.randn(64, 6, generator=g), torch.randn(64, 6, 1, generator=g), torch.randn(64, 6, 6, generator=g)
    a = net.forward_laplacian(x, f, S, chunk_rows=None)
    b = net.forward_laplacian(x, f, S, chunk_rows=7 * 3)
    for u, v in zip(a, b):
        assert torch.allclose(u, v, atol=1e-5, rtol=1e-5)


def test_second_derivatives_through_the_pass_raise():
    net, x, first, second = setup_case(2)
    _, _, lap = net.forward_laplacian(x, first, second)
    (gx,) = torch.autograd.grad(lap.sum(), second, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiate"):
        torch.autograd.grad(gx.sum(), second)


@pytest.mark.parametrize("chunk_rows", [None, 5, -1])
@pytest.mark.parametrize("with_first", [True, False])
def test_shared_basis_matches_formed_directions(chunk_rows, with_first, device):
    """second = coefficients c (B, k, m) in a basis U (d, k): the same numbers and gradients as the directions
    U c formed explicitly, for every input including U."""
    net, x, first, _ = setup_case(3, device=device, out_dim=2)
    g = torch.Generator().manual_seed(11)
    K = 5                                                     # more basis vectors than the state has coordinates
    U = torch.randn(D, K, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    c = torch.randn(B, K, M, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    first = first if with_first else None
    ref = net.forward_laplacian(x, first, U @ c, chunk_rows=chunk_rows)
    out = net.forward_laplacian(x, first, c, chunk_rows=chunk_rows, basis=U)
    inputs = [x, U, c] + ([first] if with_first else []) + list(net.parameters())
    assert_same_values_and_gradients(out, ref, inputs, g, device)
    _, dy, lap = net.forward_laplacian(x, first, c, second_gradients=False, basis=U)
    assert dy.shape == (B, 2, P if with_first else 0) and torch.allclose(lap, ref[2], atol=1e-11, rtol=0)


def test_input_box_of_the_wrong_length_is_named():
    with pytest.raises(ValueError, match="in_low"):
        hjb.MLP(3, in_low=[0.0, 0.0], in_high=1.0)
    assert hjb.MLP(3, in_low=0.0, in_high=[1.0, 2.0, 3.0]).in_center.tolist() == [0.5, 1.0, 1.5]


def test_basis_of_the_wrong_shape_is_named():
    net, x, first, second = setup_case(1)
    with pytest.raises(ValueError, match=r"basis must have shape \(4, 4\)"):
        net.forward_laplacian(x, first, second, basis=torch.zeros(3, 3, dtype=torch.float64))
