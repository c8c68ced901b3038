"""Your own digit images -> the 28x28 uint8 digits the models take, made the way MNIST's were.

    digit = prepare(open("photo.jpg", "rb").read(), "photo.jpg")     # (1, 28, 28) uint8

A photo, scan or drawing (any format Pillow reads; EXIF rotation applied; transparent pixels count as
paper) is read at no more than WORK_SIZE pixels a side. Then:
1. polarity: the ink is whatever the few pixels far from the typical (paper) value are, dark or light
   (where the typical pixel could be either, both readings are tried: see digit_reading);
2. lighting: the paper's brightness is estimated at a scale larger than a stroke (a grey closing,
   refined by averaging the paper around the ink) and divided out, which flattens gradients,
   vignetting and soft shadows;
3. ink: a threshold picked from the image (Otsu), with hysteresis so faint parts of a stroke stay;
4. the digit: connected components; specks and regions that touch the image's edge (shadows, page
   edges) are dropped, the largest remaining one is the digit and the pieces near it join it;
5. MNIST's framing: longest side 20 px, centre of mass at the centre of the 28x28 field.
Every step is a few torch operations (max-pooling is grey dilation) on the reduced image, so no
library beyond Pillow and torch is needed and a 12-megapixel photo takes a fraction of a second.
"""
import io
import logging
import math
import warnings

import torch
import torch.nn.functional as F

from cli import UserError, read_file

WORK_SIZE = 512     # longest side, in pixels, that the image is processed at
CLOSING = 9         # the widest grey-closing window computed as such; wider ones run on a shrunk copy
COARSE_CLOSING = 80  # the first, rough reading of the paper: a window a sixth of the work image wide
EPS = 0.03          # added to pixel and paper level alike, so that noise in the dark is not ink
MIN_INK = 0.12      # darkness (0 paper .. 1 black) that can count as ink at all
MIN_CONTRAST = 0.14  # mean darkness the ink must reach: below it, the image holds no digit
MIN_SNR = 3         # how far the digit's strokes must stand above the paper's grain, noise and texture
AMBIGUOUS = (0.25, 0.75)  # a median pixel between these could be paper or ground: polarity is read from the ink
MIN_RIM_CONTRAST = 0.08  # how much brighter than the ground beside them a light digit's strokes are, at least
MAX_STROKE = 0.3    # a stroke's width as a share of its digit's size, at most (a bold 0 is about 0.2)
MIN_COHERENCE = 0.25  # ink's correlation with its neighbour's around the digit, at least (random noise: 0)
# A free-standing shape smaller than what touches the edge is still the digit when it holds at least
# MIN_FREE_MASS of that ink and its ink is DENSER times as dense: a shadow band's false ink is fainter
# than the digit it hides (EXPERIMENTS.md, "Preprocessing users' digits").
MIN_FREE_MASS = 0.05
DENSER = 1.3
# Pieces of the digit within NEAR times its largest piece's size of it are kept with it: a stroke that
# thins to a hairline (a 7's stem under a bold bar) breaks the digit in two, its pieces further apart
# than half the bar's width.
NEAR = 0.75
MIN_SIZE = 4        # pixels the digit must span, at least: a clump of two or three specks is no digit
COHERENCE_AREA = 200  # pixels around the digit from which that correlation is telling (noise: std 0.07)
FORMATS = "PNG, JPEG, GIF, BMP, TIFF, WebP, PPM/PGM and the other formats Pillow reads"
# Pillow logs what it finds wrong in a damaged file; with no handler Python would print that to
# stderr beside our one line, which already says it.
logging.getLogger("PIL").addHandler(logging.NullHandler())


def prepare(data, name="image"):
    """Image file bytes -> (1, 28, 28) uint8, white digit on black. `name` is what errors call it."""
    return to_mnist(read_image(data, name), name)


def load_image(path):
    """An image file as (H, W) float gray in [0, 1] (white = 1), at most WORK_SIZE a side."""
    return read_image(read_file(path, "image"), path)


# ---------------------------------------------------------------- reading

def read_image(data, name="image"):
    """Image file bytes -> (H, W) float gray in [0, 1], white = 1, at most WORK_SIZE a side."""
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's notes on odd metadata: the pixels are what matter
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            scale = WORK_SIZE / max(img.size)
            if scale < 1:  # a JPEG can be decoded at 1/2, 1/4 or 1/8 of its size, which is far faster
                img.draft(img.mode, (int(img.width * scale) + 1, int(img.height * scale) + 1))
            img = ImageOps.exif_transpose(img)  # phone photos store their rotation in EXIF
            factor = max(img.size) // WORK_SIZE
            if factor >= 2 and img.mode in ("L", "RGB"):
                # Block averages in 8 bits first, before the float image (a 12-megapixel PNG has no
                # draft): 0.06 s less for the conversion and 0.03 s for the resize below.
                img = img.reduce(factor)
            gray = to_gray(img)
            if max(gray.size) > WORK_SIZE:
                scale = WORK_SIZE / max(gray.size)
                gray = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))),
                                   Image.BOX)  # area averaging: a thin stroke turns grey, it does not vanish
            pixels = torch.frombuffer(bytearray(gray.tobytes()), dtype=torch.float32)
    except Exception as e:  # a damaged or hostile file can make a decoder raise almost anything
        raise UserError(f"{name} is not a readable image ({type(e).__name__}): pass an image file "
                        f"({FORMATS})") from None
    return pixels.view(gray.height, gray.width)


def to_gray(img):
    """A Pillow image of any mode as 32-bit float gray in [0, 1] (Pillow's "F" mode): transparency over
    white paper; 16-bit, 32-bit and float images stretched from their darkest to their brightest pixel."""
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = img.convert("F")
        lo, hi = img.getextrema()
        return img.point(lambda v: (v - lo) / (hi - lo) if hi > lo else 0.0)
    return img.convert("L").convert("F").point(lambda v: v / 255)


# ---------------------------------------------------------------- finding the ink

def to_mnist(gray, name="image"):
    """(H, W) gray in [0, 1] -> (1, 28, 28) uint8, white digit on black, as MNIST digits were made."""
    ink, keep = digit_reading(gray, name)
    top, bottom, left, right = box(keep)
    near = dilate(keep.float(), 3) > 0  # the stroke's antialiased edge, just under the threshold
    digit = (ink * near)[top:bottom + 1, left:right + 1]
    core = ink[keep]
    digit = (digit / core.quantile(0.99).clamp_min(1e-3)).clamp(0, 1)  # faint pencil and black marker alike
    return frame(digit)


def digit_reading(gray, name):
    """(ink map, digit mask) of the image, its polarity decided.

    Where the typical (median) pixel is clearly light or clearly dark, that is the paper (though where a
    dark ground holds no light digit, it is paper in dim light, and dark ink is read). In between (a
    shadow over part of the page), the long tail decides (dark_tail); where it says light ink, dark
    ink on paper is read too. It wins when it finds a digit-like shape that is not inside the
    light reading's digit (the ground in a light digit's loops is), and the light reading finds no
    digit-like shape, or only one inside the dark reading's digit (the paper in a bold dark digit's
    loops), or a less inky one. The tail alone calls many dark-ink photos under a deep shadow light
    (EXPERIMENTS.md, "Preprocessing users' digits")."""
    paper = paper_median(gray)
    if paper >= AMBIGUOUS[1]:
        return read_digit(gray, name)
    if paper <= AMBIGUOUS[0]:
        try:
            return read_digit(1 - gray, name)
        except UserError as no_light_digit:
            dim = dim_paper_reading(gray, name)
            if dim is None:
                raise no_light_digit
            return dim
    if dark_tail(gray):
        return read_digit(gray, name)
    try:
        light = read_digit(1 - gray, name)
    except UserError:
        return read_digit(gray, name)
    try:
        dark = read_digit(gray, name)
    except UserError:
        return light
    if digit_like(dark[1]) and (not within(dark[1], light[1]) or rim(gray, light[1], dark[1])) and \
            (not digit_like(light[1]) or within(light[1], dark[1]) or
             dark[0][dark[1]].mean() >= light[0][light[1]].mean()):
        return dark
    return light


def dim_paper_reading(gray, name):
    """The dark-ink reading of a dark image that holds no light digit (paper photographed in dim light),
    or None. Only a digit-like shape counts: on paper this dark, the lag of the paper's estimate in a
    corner of a plain gradient reads as strong ink."""
    try:
        dark = read_digit(gray, name)
    except UserError:
        return None
    return dark if digit_like(dark[1]) else None


def rim(gray, light, dark):
    """Whether a light reading that encloses the dark one is only the rim a bold dark digit leaves around
    itself (the closing spreads the digit's level a little past its edge, so the paper beside it reads as
    ink): no brighter than the paper just outside it. A light digit's strokes stand out from the ground
    around them, which is what the dark reading found inside its loops."""
    outside = (dilate(light.float(), 9) > 0) & ~light & ~(dilate(dark.float(), 3) > 0)
    return not outside.any() or float(gray[light].mean() - gray[outside].mean()) < MIN_RIM_CONTRAST


def box(mask):
    """Top, bottom, left and right (inclusive) of a non-empty boolean mask."""
    rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def within(inner, outer):
    """Whether mask `inner` lies inside the box of mask `outer` (the ground inside a light digit's
    loops, read as dark ink, does)."""
    t, b, l, r = box(inner)
    t2, b2, l2, r2 = box(outer)
    return t >= t2 and b <= b2 and l >= l2 and r <= r2


def digit_like(keep):
    """Whether a digit mask looks like written strokes: clear of the image's edge, and strokes at most
    MAX_STROKE of the digit's size (reading a light digit as dark ink finds the ground between its
    strokes: a blob, or a region that runs to the edge)."""
    if keep[0].any() or keep[-1].any() or keep[:, 0].any() or keep[:, -1].any():
        return False
    top, bottom, left, right = box(keep)
    return stroke_width(keep) <= MAX_STROKE * (max(bottom - top, right - left) + 1)


def read_digit(gray, name):
    """(ink map, digit mask) of dark ink on lighter paper.

    A rough reading with a wide grey closing gives the strokes' width; the paper's brightness is then
    estimated again with a closing just wider than the strokes (ink_map), which keeps the sharp edge of
    a shadow where a wider window (or a blur) would leave a band of false ink along it. Where the digit
    found is bolder than that width said (thin marks beside it, a lined page's rules or a shadow's edge,
    pulled the average down), the closing would have taken its strokes' middle for paper and left an
    outline: it is read again with a closing as wide as its own strokes."""
    rough = flatten(gray, paper_level(gray, COARSE_CLOSING))
    inked = rough > max(otsu(rough), MIN_INK)
    width = stroke_width(inked)
    ink = ink_map(gray, width)
    keep = digit_mask(ink, name)
    top, bottom, left, right = box(keep)
    bold = thick_width(inked[top:bottom + 1, left:right + 1])
    if bold > closing_width(width):
        ink = ink_map(gray, bold)
        keep = digit_mask(ink, name)
    return ink, keep


def ink_map(gray, width):
    """How much dark ink each pixel holds, 0 (paper) to 1, with the paper's lighting divided out: its
    brightness estimated with a closing wide enough to wipe out strokes `width` pixels wide."""
    return flatten(gray, paper_level(gray, closing_width(width)))


def closing_width(width):
    """The grey-closing window, in pixels, that wipes out strokes about `width` wide: four times that, as
    an average width understates a digit's boldest strokes and the joins between them."""
    return round(4 * width) + 3


def thick_width(mask, share=0.05):
    """The width of the boldest strokes that hold `share` of the mask's pixels: twice the depth (in 3x3
    erosions) that share of them lies at or beyond. A marker pressed down on one stretch of a thin digit
    is a small share of it, so the share is small too, but not so small that one blot decides."""
    m = F.pad(mask.float(), (1, 1, 1, 1))  # paper all round: dilate's padding alone would keep the edges inked
    n = m.sum()
    depth = 0
    while m.sum() > share * n:
        m = -dilate(-m, 3)
        depth += 1
    return 2.0 * depth


def paper_median(gray):
    """The typical (median) pixel, from a sample of at most 65,536."""
    return float(gray.flatten()[::max(1, gray.numel() // 65536)].median())


def dark_tail(gray):
    """Whether the ink looks darker than the paper (a light digit on a dark ground, as a blackboard or
    MNIST's own, is not) where the typical pixel says nothing: the ink is the long tail against a local
    average that follows the lighting, far below it for dark ink, above for light."""
    k = max(5, max(gray.shape) // 6 // 2 * 2 + 1)
    detail = (gray - blur(gray[None, None], k)[0, 0]).flatten()[::max(1, gray.numel() // 65536)].sort().values
    tail = max(1, len(detail) // 200)
    return bool(-detail[:tail].mean() >= detail[-tail:].mean())


def flatten(gray, level):
    """Ink darkness: how far each pixel falls below the paper's level, as a share of it. EPS keeps the
    noise in a very dark corner from counting as ink."""
    return (1 - (gray + EPS) / (level + EPS)).clamp(0, 1)


def paper_level(gray, width):
    """The paper's brightness at each pixel: a grey closing (dilate, then erode) with a `width`-pixel window
    wipes out every dark stroke narrower than that. It runs on a copy shrunk so that the window is at
    most CLOSING pixels wide, and on no more than COARSE_SIZE pixels a side for the widest windows."""
    h, w = gray.shape
    scale = min(1.0, CLOSING / width)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = F.interpolate(gray[None, None], size=size, mode="area")
    k = min(CLOSING, max(3, round(width * scale) // 2 * 2 + 1))
    level = -dilate(-dilate(blur(small, 3), k), k)
    level = torch.maximum(blur(level, 3), small)  # paper is never darker than what is on it
    return F.interpolate(level, size=(h, w), mode="bilinear", align_corners=False)[0, 0]


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


def otsu(values, bins=256):
    """The threshold between two classes of values in [0, 1] that maximises their between-class variance."""
    hist = torch.histc(values, bins=bins, min=0, max=1).double()
    p = hist / hist.sum()
    centres = (torch.arange(bins, dtype=torch.float64) + 0.5) / bins
    w0 = p.cumsum(0)
    m0 = (p * centres).cumsum(0)
    between = (m0[-1] * w0 - m0) ** 2 / (w0 * (1 - w0)).clamp_min(1e-12)
    return float(centres[between[:-1].argmax()] + 0.5 / bins)


# ---------------------------------------------------------------- keeping the digit

def digit_mask(ink, name):
    """The pixels of the digit: ink above a threshold taken from the image, grouped into connected
    components; specks and what touches the image's edge dropped, the largest remaining component and
    the pieces near it kept."""
    ink = without_rules(ink)
    threshold = max(otsu(ink.flatten()[::max(1, ink.numel() // 262144)]), MIN_INK)
    strong = ink > threshold
    weak = (ink > threshold / 2) & (dilate(strong.float(), 5) > 0)  # a stroke's faint parts, not far-off grey
    if not strong.any() or ink[strong].mean() < MIN_CONTRAST:
        raise UserError(f"{name}: no digit found (the image is blank or has too little contrast)")
    labels = components(weak)
    ids, inverse = labels[weak].unique(return_inverse=True)
    has_strong = torch.zeros(len(ids), dtype=torch.bool).index_fill_(0, inverse[strong[weak]].unique(), True)
    mass = torch.zeros(len(ids), dtype=torch.float64).index_add_(0, inverse, ink[weak].double())
    ys, xs = weak.nonzero(as_tuple=True)
    n = len(ids)
    box = torch.stack([torch.full((n,), 1 << 30).scatter_reduce(0, inverse, ys, "amin"),
                       torch.zeros(n, dtype=torch.long).scatter_reduce(0, inverse, ys, "amax"),
                       torch.full((n,), 1 << 30).scatter_reduce(0, inverse, xs, "amin"),
                       torch.zeros(n, dtype=torch.long).scatter_reduce(0, inverse, xs, "amax")], 1)
    h, w = ink.shape
    edge = (box[:, 0] == 0) | (box[:, 1] == h - 1) | (box[:, 2] == 0) | (box[:, 3] == w - 1)
    candidate = has_strong & (mass >= 0.02 * mass[has_strong].max())  # specks go
    inside = candidate & ~edge
    # What touches the edge is a shadow, a page edge or a neighbouring digit, unless nothing substantial
    # stands free of it (a digit cropped tight, or drawn up to the canvas edge). A smaller free shape
    # still wins when its ink is denser: the false ink a shadow's edge leaves is faint, just over the
    # threshold along a wide band, where a digit's strokes stand well above it.
    if inside.any():
        density = mass / torch.bincount(inverse, minlength=n)  # mean darkness of each component
        free, heaviest = heaviest_of(inside, mass), heaviest_of(candidate, mass)
        if mass[free] >= 0.25 * mass[heaviest] or (mass[free] >= MIN_FREE_MASS * mass[heaviest] and
                                                   density[free] >= DENSER * density[heaviest]):
            candidate = inside
    main = heaviest_of(candidate, mass)
    t, b, l, r = box[main].tolist()
    grow = NEAR * max(b - t + 1, r - l + 1)
    near = candidate & (box[:, 1] >= t - grow) & (box[:, 0] <= b + grow) & (box[:, 3] >= l - grow) & \
        (box[:, 2] <= r + grow) & (mass >= 0.1 * mass[main])
    keep = torch.zeros_like(weak)
    keep[weak] = near[inverse]
    # Faint pencil is still a digit where the paper around it is clean; grain, noise or a textured
    # sheet as dark as it is not. Strokes: their 90th percentile; paper: its 95th, away from the ink
    # (its 99th takes in the faint band of false ink that a sharp shadow edge leaves beside bold strokes).
    paper = ink[dilate(strong.float(), 9) == 0]
    if paper.numel() and ink[keep].quantile(0.9) < MIN_SNR * paper.quantile(0.95):
        raise UserError(f"{name}: no digit found (the marks are as faint as the paper's own grain and noise)")
    refuse_specks_and_noise(ink, keep, name)
    return keep


def heaviest_of(pick, mass):
    """Index of the component with the most ink among those `pick` marks."""
    return int(torch.where(pick, mass, torch.zeros_like(mass)).argmax())


def refuse_specks_and_noise(ink, keep, name):
    """A one-line "no digit found" where the digit mask is a clump of a few specks, or random noise's
    strongest clump (its ink unlike its neighbours', see coherence)."""
    top, bottom, left, right = box(keep)
    if max(bottom - top, right - left) + 1 < MIN_SIZE:
        raise UserError(f"{name}: no digit found (only specks a few pixels across)")
    # The paper at its edges too, and enough of it that a narrow 1 or a clump of specks is judged on
    # COHERENCE_AREA pixels where the image has them.
    pad = max(2, math.ceil((math.sqrt(COHERENCE_AREA) - min(bottom - top, right - left) - 1) / 2))
    around = ink[max(0, top - pad):bottom + pad + 1, max(0, left - pad):right + pad + 1]
    if around.numel() >= COHERENCE_AREA and coherence(around) < MIN_COHERENCE:
        raise UserError(f"{name}: no digit found (the image is noise: its dark pixels form no strokes)")


def coherence(ink):
    """How alike neighbouring pixels' ink is: the largest correlation of the map with itself shifted one
    pixel across, down or along either diagonal (a stroke at any angle runs along one of them). Random
    noise has none, so its strongest clump passes every other test; digits score well above
    MIN_COHERENCE (EXPERIMENTS.md, "Preprocessing users' digits"). Solid ink that hardly varies (a bar
    cropped tight) is no noise either: 1."""
    mean = ink.mean()
    x = ink - mean
    variance = (x * x).mean()
    if variance < 0.05 ** 2 and mean > 0.5:
        return 1.0
    pairs = ((x[:, 1:], x[:, :-1]), (x[1:], x[:-1]), (x[1:, 1:], x[:-1, :-1]), (x[1:, :-1], x[:-1, 1:]))
    return max(float((a * b).mean() / variance.clamp_min(1e-12)) for a, b in pairs)


def without_rules(ink):
    """The ink map with the rules of lined paper taken out, which would otherwise tie each digit that
    touches one to the image's edges. A rule is a row inked nearly from edge to edge: its 20th
    percentile of ink stands out (a digit crossing it, or a digit's own bar, covers far less of a
    row). Two or more such rows are needed, since one long bar alone is more likely a 7's or a 5's.
    The rule's own darkness is subtracted along it, so a stroke that crosses it keeps most of its ink."""
    rows = ink.quantile(0.2, dim=1)
    floor = rows.median()
    line = rows > max(2.5 * floor, floor + 0.04)
    starts = line & ~F.pad(line, (1, 0))[:-1]
    if int(starts.sum()) < 2 or ink.shape[1] < 64:
        return ink
    return (ink - (rows * line)[:, None]).clamp_min(0)


def components(mask):
    """Labels of the 8-connected components of a boolean (H, W) mask (0 off the mask): each pixel takes
    the largest pixel index in its component, by max-pooling within the mask and pointer jumping."""
    h, w = mask.shape
    on = mask.float()
    labels = torch.arange(1, h * w + 1, dtype=torch.float32).view(h, w) * on  # exact up to 2**24 pixels
    while True:
        before = labels
        for _ in range(4):
            labels = dilate(labels, 3) * on
            flat = labels.flatten()
            labels = flat[(flat - 1).clamp_min(0).long()].view(h, w) * on  # jump to the label's label
        if torch.equal(labels, before):
            return labels.long()


# ---------------------------------------------------------------- MNIST's framing

def frame(digit):
    """A cropped digit (H, W) in [0, 1] -> (1, 28, 28) uint8: longest side 20 pixels, aspect kept, strokes
    as wide as MNIST's, centre of mass at the centre of the field, as MNIST's digits were made."""
    h, w = digit.shape
    scale = 20 / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    # Shrunk antialiased, so that thin strokes survive. Enlarged (a low-resolution scan) bicubic: smoother
    # strokes than bilinear's, closer to the digit the scan was made from (EXPERIMENTS.md, "Preprocessing
    # users' digits"); clamped, as bicubic overshoots at sharp edges.
    mode = "bicubic" if scale > 1 else "bilinear"
    digit = F.interpolate(digit[None, None], size=size, mode=mode, antialias=True, align_corners=False)[0, 0]
    digit = digit.clamp(0, 1)
    digit = even_strokes(F.pad(digit / digit.max().clamp_min(1e-6), (2, 2, 2, 2)))
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
