"""Image operations that training and predict.py share: framing a digit as MNIST's were, grey dilation
and a box blur. data.py builds training digits with them (the printed digits, the stroke and lowres
augmentations) and preprocess.py frames users' digits with them, so a change here changes the training
set as well as what predict.py reads: measure both (EXPERIMENTS.md)."""
import torch
import torch.nn.functional as F


def frame(digit):
    """A cropped digit (H, W) in [0, 1] -> (1, 28, 28) uint8: longest side 20 pixels, aspect kept, strokes
    as wide as MNIST's, centre of mass at the centre of the field, as MNIST's digits were made."""
    h, w = digit.shape
    digit = at_scale(digit, 20 / max(h, w))
    rows, cols = digit.any(1).nonzero().flatten(), digit.any(0).nonzero().flatten()
    digit = digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    size = digit.shape
    ys, xs = torch.arange(size[0], dtype=torch.float32), torch.arange(size[1], dtype=torch.float32)
    mass = digit.sum()
    com_y, com_x = (digit.sum(1) * ys).sum() / mass, (digit.sum(0) * xs).sum() / mass
    top = int((14 - com_y).round().clamp(0, 28 - size[0]))
    left = int((14 - com_x).round().clamp(0, 28 - size[1]))
    canvas = torch.zeros(28, 28)
    canvas[top:top + size[0], left:left + size[1]] = digit
    return (canvas * 255).round().to(torch.uint8)[None]


def frame_wide(mark, width=80):
    """A cropped mark of one to three digits side by side (H, W) in [0, 1] -> (1, 28, width) uint8: 20
    pixels tall as MNIST's digits are (narrower where it would not fit), strokes as wide as MNIST's,
    centred; the MarkReader's input."""
    h, w = mark.shape
    mark = at_scale(mark, min(20 / h, (width - 4) / w))
    canvas = torch.zeros(28, width)
    top, left = (28 - mark.shape[0]) // 2, (width - mark.shape[1]) // 2
    canvas[top:top + mark.shape[0], left:left + mark.shape[1]] = mark
    return (canvas * 255).round().to(torch.uint8)[None]


def at_scale(digit, scale):
    """A cropped digit in [0, 1] scaled by `scale`, its ink brought to 1 and its strokes to MNIST's width
    (even_strokes), with 2 pixels of margin a side."""
    h, w = digit.shape
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    # Shrunk antialiased, so that thin strokes survive. Enlarged (a low-resolution scan) bicubic: smoother
    # strokes than bilinear's, closer to the digit the scan was made from (EXPERIMENTS.md, "Preprocessing
    # users' digits"); clamped, as bicubic overshoots at sharp edges.
    mode = "bicubic" if scale > 1 else "bilinear"
    digit = F.interpolate(digit[None, None], size=size, mode=mode, antialias=True, align_corners=False)[0, 0]
    digit = digit.clamp(0, 1)
    return even_strokes(F.pad(digit / digit.max().clamp_min(1e-6), (2, 2, 2, 2)))


def even_strokes(digit):
    """A digit at MNIST's 20-pixel scale with its strokes brought into MNIST's range, one pixel a side at a
    time: a marker's or a low-resolution scan's strokes wider than 4 pixels eroded (MNIST's test digits
    measure 2.0 to 3.4 from the 1st to the 95th percentile, 4.0 at the 99th), and a fine pen's
    hairlines spread by a blur into strokes about 3 pixels wide with soft edges, as MNIST's are: those
    that no 3x3 erosion leaves anything of, even counting their faint edges (true of 0.5% of MNIST's
    digits). A blur, not a 3x3 dilation: a dilation gives every pixel the strongest ink around it, so
    hard-edged blocks, and a faint tip (a thin font's 6's hook) as bold as the rest, read as an 8
    (EXPERIMENTS.md, "Preprocessing users' digits")."""
    for _ in range(3):
        if stroke_width(digit > 0.4) > 4:
            digit = -dilate(-digit, 3)
        elif not (-dilate(-(digit > 0.1).float(), 3)).any():
            digit = blur(digit[None, None], 3)[0, 0]
            digit = digit / digit.max()
        else:
            break
    return digit


def stroke_width(mask):
    """About how wide the strokes of a boolean mask are, in pixels: twice its area over the pixels on its
    boundary (a stroke w wide and L long has about w * L pixels, 2 * L of them on its edges)."""
    m = mask.float()
    edge = (m - -dilate(-m, 3)).sum()
    return float(2 * m.sum() / edge.clamp_min(1))


def dilate(x, k):
    """Grey dilation: the max over a k x k window (k odd) around each pixel of the last two dimensions.
    Written as shifted maxima, rows then columns: on a CPU, F.max_pool2d at stride 1 is about 100 times
    slower."""
    r = k // 2
    h, w = x.shape[-2:]
    padded = F.pad(x, (r, r, r, r), value=float("-inf"))
    rows = padded[..., 0:h, :]
    for i in range(1, k):
        rows = torch.maximum(rows, padded[..., i:i + h, :])
    out = rows[..., :, 0:w]
    for j in range(1, k):
        out = torch.maximum(out, rows[..., :, j:j + w])
    return out


def blur(x, k=5):
    """Two passes of a k x k box filter (about a Gaussian) over the last two dimensions of (N, C, H, W),
    edges extended. Running sums make it cost the same for any k (F.avg_pool2d at stride 1 is slow on a
    CPU, and slower the wider the window)."""
    r = k // 2
    for _ in range(2):
        for dim, pad in ((-2, (0, 0, r + 1, r)), (-1, (r + 1, r, 0, 0))):
            sums = F.pad(x, pad, mode="replicate").cumsum(dim)
            x = (sums.narrow(dim, k, sums.shape[dim] - k) - sums.narrow(dim, 0, sums.shape[dim] - k)) / k
    return x


def side_by_side(images):
    """(K, 1, 28, 28) digits side by side, (1, 28, 28 K): how a number's digits are shown."""
    return torch.cat(list(images), dim=2)
