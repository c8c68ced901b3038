"""imageops.py: grey dilation, the box blur, stroke width and MNIST's framing, which training and predict.py
share."""
import pytest
import torch
import torch.nn.functional as F

import imageops


def test_dilate_is_max_pooling():
    x = torch.rand(2, 1, 37, 23, generator=torch.Generator().manual_seed(0))
    for k in (3, 5, 9):
        assert torch.equal(imageops.dilate(x, k), F.max_pool2d(x, k, stride=1, padding=k // 2))


def test_blur_is_two_box_filters_with_edges_extended():
    x = torch.rand(1, 1, 30, 40, generator=torch.Generator().manual_seed(1))
    expected = x
    for _ in range(2):
        expected = F.avg_pool2d(F.pad(expected, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    assert torch.allclose(imageops.blur(x, 5), expected, atol=1e-5)
    flat = torch.full((1, 1, 12, 12), 0.3)
    assert torch.allclose(imageops.blur(flat, 7), flat)


@pytest.mark.parametrize("width", [2, 4, 7])
def test_stroke_width_of_a_bar(width):
    mask = torch.zeros(100, 100, dtype=torch.bool)
    mask[10:90, 40:40 + width] = True
    assert imageops.stroke_width(mask) == pytest.approx(width, rel=0.15)


@pytest.mark.parametrize("shape", [(300, 120), (60, 200), (9, 6)])
def test_frame_is_mnists_framing(shape):
    """Longest side 20 pixels (a small digit enlarged), centre of mass at the centre of 28x28, uint8."""
    h, w = shape
    digit = torch.zeros(h, w)
    digit[:, : max(1, w // 4)] = 1  # a bar down the left, so the mass is off the box's centre
    digit[: max(1, h // 4)] = 1
    out = imageops.frame(digit)
    assert out.shape == (1, 28, 28) and out.dtype == torch.uint8
    ink = out[0].float()
    rows, cols = ink.any(1).nonzero().flatten(), ink.any(0).nonzero().flatten()
    assert 19 <= max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 22  # 20, and what strokes' edges add
    ys, xs = torch.arange(28.0), torch.arange(28.0)
    com = ((ink.sum(1) * ys).sum() / ink.sum(), (ink.sum(0) * xs).sum() / ink.sum())
    assert all(abs(c - 14) <= 1.5 for c in com)


def test_even_strokes_thins_a_marker_and_widens_a_hairline():
    marker = torch.zeros(24, 24)
    marker[2:22, 6:15] = 1  # 9 pixels wide
    assert imageops.stroke_width(imageops.even_strokes(marker) > 0.4) <= 4
    hairline = torch.zeros(24, 24)
    hairline[2:22, 12] = 1  # 1 pixel wide
    widened = imageops.even_strokes(hairline)
    assert (widened[12] > 0.1).sum() >= 3 and widened.max() == 1
