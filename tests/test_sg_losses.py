"""core.sg.losses against straightforward loop implementations (float64, several shapes)."""
import math

import pytest
import torch

from core.sg.losses import (adjust_teacher_logits, clip_contrastive_loss, sg_kd_loss, sg_rl_loss,
                            soft_label_matrix)

SHAPES = [(1, 3, 4), (5, 4, 8), (8, 7, 16), (13, 10, 6)]  # (B, N, D)


def _normed(*shape, gen):
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


def _softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


def _ce(row, target):
    m = max(row)
    return -(row[target] - m - math.log(sum(math.exp(v - m) for v in row)))


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def _kl(p, q):
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0)


@pytest.mark.parametrize("B,N,D", SHAPES)
def test_clip_contrastive_matches_loops(B, N, D):
    g = torch.Generator().manual_seed(B * 100 + D)
    z, w = _normed(B, D, gen=g), _normed(B, D, gen=g)
    s = 100.0 / 7
    L = [[s * _dot(z[i].tolist(), w[j].tolist()) for j in range(B)] for i in range(B)]
    Lt = [[L[j][i] for j in range(B)] for i in range(B)]
    expected = 0.5 * (sum(_ce(L[i], i) for i in range(B)) / B + sum(_ce(Lt[i], i) for i in range(B)) / B)
    assert clip_contrastive_loss(z, w, s).item() == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("N,D", [(2, 3), (6, 8), (10, 384)])
def test_soft_label_matrix_rows_are_softmax_of_scaled_cosines(N, D):
    g = torch.Generator().manual_seed(N)
    u = _normed(N, D, gen=g)
    kappa = 13.0
    got = soft_label_matrix(u, kappa)
    for y in range(N):
        expected = _softmax([kappa * _dot(u[y].tolist(), u[c].tolist()) for c in range(N)])
        assert got[y].tolist() == pytest.approx(expected, abs=1e-12)
    assert torch.allclose(got.sum(1), torch.ones(N, dtype=torch.float64))


@pytest.mark.parametrize("B,N,D", SHAPES)
def test_sg_rl_reference_reduction_sum_over_B_times_N(B, N, D):
    g = torch.Generator().manual_seed(B + N)
    logits = torch.randn(B, N, generator=g, dtype=torch.float64) * 5
    targets = torch.randint(0, N, (B,), generator=g)
    soft = soft_label_matrix(_normed(N, D, gen=g), 13.0)
    total = 0.0
    for i in range(B):
        q = soft[targets[i]].tolist()
        p = _softmax(logits[i].tolist())
        total += _kl(q, p)
    expected = total / (B * N)  # reference kl_div(reduction="mean")
    assert sg_rl_loss(logits, targets, soft).item() == pytest.approx(expected, abs=1e-9)


def test_adjustment_adds_max_at_argmax_and_subtracts_elsewhere():
    teacher = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    inter = torch.tensor([[0.2, 0.9, 0.5], [0.7, 0.1, 0.3]], dtype=torch.float64)
    # written out by hand: row 0 max 0.9 at column 1, row 1 max 0.7 at column 0
    expected = torch.tensor([[1.0 - 0.9, 2.0 + 0.9, 3.0 - 0.9], [0.7, -0.7, -0.7]], dtype=torch.float64)
    assert torch.allclose(adjust_teacher_logits(teacher, inter), expected, atol=1e-12)


@pytest.mark.parametrize("B,M", [(1, 2), (4, 3), (9, 6), (16, 1)])
@pytest.mark.parametrize("T", [1.0, 4.0])
def test_sg_kd_matches_loops(B, M, T):
    g = torch.Generator().manual_seed(B * M)
    student = torch.randn(B, M, generator=g, dtype=torch.float64) * 10
    teacher = torch.randn(B, M, generator=g, dtype=torch.float64) * 10
    inter = torch.rand(B, M, generator=g, dtype=torch.float64)
    total = 0.0
    for i in range(B):
        row = inter[i].tolist()
        m = max(row)
        k = row.index(m)
        adjusted = [teacher[i, c].item() + (m if c == k else -m) for c in range(M)]
        p_teacher = _softmax([v / T for v in adjusted])
        p_student = _softmax([student[i, c].item() / T for c in range(M)])
        total += _kl(p_teacher, p_student)
    expected = T * T / B * total
    assert sg_kd_loss(student, teacher, inter, T).item() == pytest.approx(expected, abs=1e-9)


def test_sg_kd_is_zero_when_student_equals_adjusted_teacher():
    g = torch.Generator().manual_seed(3)
    teacher = torch.randn(5, 4, generator=g, dtype=torch.float64)
    inter = torch.rand(5, 4, generator=g, dtype=torch.float64)
    student = adjust_teacher_logits(teacher, inter)
    assert sg_kd_loss(student, teacher, inter, 4.0).item() == pytest.approx(0.0, abs=1e-12)
    # and the unadjusted teacher is *not* the optimum: the adjustment matters
    assert sg_kd_loss(teacher, teacher, inter, 4.0).item() > 1e-4


def test_losses_float32_match_float64_and_are_differentiable():
    g = torch.Generator().manual_seed(0)
    z, w = _normed(6, 8, gen=g), _normed(6, 8, gen=g)
    l64 = clip_contrastive_loss(z, w, 100.0).item()
    z32 = z.float().requires_grad_()
    l32 = clip_contrastive_loss(z32, w.float(), 100.0)
    l32.backward()
    assert l32.item() == pytest.approx(l64, rel=1e-5)
    assert z32.grad is not None and torch.isfinite(z32.grad).all()
