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
Every step is a few torch operations (max-pooling is grey dilation) on the reduced image, but for the
connected components (scipy.ndimage), so a 12-megapixel photo takes a fraction of a second.
"""
import functools
import io
import logging
import math
import re
import warnings
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from cli import UserError
from imageops import blur, dilate, frame, stroke_width

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
FREE_MASS = 0.25    # a free shape with this share of the heaviest's ink wins whatever its density
# Pieces of the digit within NEAR times its largest piece's size of it are kept with it: a stroke that
# thins to a hairline (a 7's stem under a bold bar) breaks the digit in two, its pieces further apart
# than half the bar's width.
NEAR = 0.75
NEAR_MASS = 0.1     # ...when they hold at least this share of its ink
# A marker pressed down on one stretch of a thin digit is a small share of it, so the share of the boldest
# strokes that decides how wide the paper's closing must be is small too, but not so small that one blot does.
BOLDEST = 0.05
MIN_PIECE = 0.02    # a component with less than this share of the heaviest one's ink is a speck
HYSTERESIS = 0.5    # a stroke's faint parts count down to this share of the ink threshold ...
WEAK_REACH = 5      # ... within this window of its strong ink
PAPER_CLEARANCE = 9  # the paper whose grain the digit is held against lies outside this window of the ink
SAMPLE = 65_536     # pixels that the paper's median and the ink's tail are estimated from, at most
THRESHOLD_SAMPLE = 262_144  # pixels that the ink threshold is picked from, at most
MIN_SIZE = 4        # pixels the digit must span, at least: a clump of two or three specks is no digit
COHERENCE_AREA = 200  # pixels around the digit from which that correlation is telling (noise: std 0.07)
FORMATS = "PNG, JPEG, HEIC, AVIF, GIF, BMP, TIFF, WebP, PPM/PGM and the other formats Pillow reads"
# Pillow logs what it finds wrong in a damaged file; with no handler Python would print that to
# stderr beside our one line, which already says it.
logging.getLogger("PIL").addHandler(logging.NullHandler())


def prepare(data, name="image"):
    """Image file bytes -> (1, 28, 28) uint8, white digit on black. `name` is what errors call it."""
    return to_mnist(read_image(data, name), name)


def to_mnist(gray, name="image"):
    """(H, W) gray in [0, 1] -> (1, 28, 28) uint8, white digit on black: the pipeline, in its order."""
    return framed(found_digit(gray, name))


def framed(reading):
    """The digit a Reading found in MNIST's framing (imageops.frame): (1, 28, 28) uint8."""
    return frame(cut_out(reading))


def found_digit(gray, name="image"):
    """The image's Reading (polarity, then the paper's lighting divided out, the ink and the digit's
    pixels), or a UserError saying why no digit was found."""
    reading = digit_reading(gray)
    if reading.mask is None:
        raise UserError(f"{name}: no digit found ({reading.why})")
    return reading


# ---------------------------------------------------------------- reading

@functools.cache
def heif_registered():
    """HEIC/HEIF (the iPhone's default photo format) read through pillow-heif, which registers with Pillow;
    Pillow reads AVIF itself."""
    try:
        import pillow_heif
    except ImportError:  # requirements.txt installs it; without it, HEIC alone is unreadable
        return
    pillow_heif.register_heif_opener()


def too_large(name, error):
    """The one line for an image over Pillow's pixel limit (a decompression-bomb guard), with its size."""
    from PIL import Image

    def megapixels(n):
        return f"{n / 1e6:.0f}" if n >= 1e7 else f"{n / 1e6:.1f}"

    pixels = re.search(r"\((\d+) pixels\)", str(error))  # Pillow's message is where it says the size
    size = f"{megapixels(int(pixels.group(1)))} megapixels" if pixels else "too large"
    return (f"{name} is {size}, over the {megapixels(Image.MAX_IMAGE_PIXELS)}-megapixel limit: pass a smaller "
            "image (scale or crop it)")


def read_image(data, name="image"):
    """Image file bytes -> (H, W) float gray in [0, 1], white = 1, at most WORK_SIZE a side."""
    from PIL import Image, ImageOps

    heif_registered()
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
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise UserError(too_large(name, e)) from None
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

def cut_out(reading):
    """The digit a Reading found, cropped to its box, its ink scaled so that its strokes reach 1."""
    ink, keep = reading.ink, reading.mask
    top, bottom, left, right = box(keep)
    near = dilate(keep.float(), 3) > 0  # the stroke's antialiased edge, just under the threshold
    digit = (ink * near)[top:bottom + 1, left:right + 1]
    core = ink[keep]
    return (digit / core.quantile(0.99).clamp_min(1e-3)).clamp(0, 1)  # faint pencil and black marker alike


class Reading(NamedTuple):
    """One polarity's reading of an image: its ink map (0 paper .. 1 ink) and the digit's pixels in it, or
    mask None and why no digit was found; and the map's Marks the digit was picked from (segmentation.py
    groups all of them), where it had any."""
    ink: torch.Tensor
    mask: Optional[torch.Tensor]
    why: str = ""
    marks: Optional["Marks"] = None

    def mean_ink(self):
        return self.ink[self.mask].mean()


def digit_reading(gray):
    """The Reading of the image, its polarity decided.

    Where the typical (median) pixel is clearly light or clearly dark, that is the paper (though where a
    dark ground holds no light digit, it is paper in dim light, and dark ink is read). In between (a
    shadow over part of the page), the long tail decides (dark_tail); where it says light ink, dark ink
    on paper is read too, and dark_wins chooses. The tail alone calls many dark-ink photos under a deep
    shadow light (EXPERIMENTS.md, "Preprocessing users' digits")."""
    paper = paper_median(gray)
    if paper >= AMBIGUOUS[1] or (paper > AMBIGUOUS[0] and dark_tail(gray)):
        return read_digit(gray)
    light = read_digit(1 - gray)
    if paper <= AMBIGUOUS[0]:
        return light if light.mask is not None else dim_paper_reading(gray) or light
    if light.mask is None:
        return read_digit(gray)
    dark = read_digit(gray)
    if dark.mask is None:
        return light
    return dark if dark_wins(gray, dark, light) else light


def dark_wins(gray, dark, light):
    """Whether dark ink on paper is the reading to trust when both polarities find a digit: the dark one
    is a digit-like shape that is not the ground in a light digit's loops (or the light reading is only
    the rim around a bold dark digit), and the light one is no digit, or only the paper in a bold dark
    digit's loops, or less inky."""
    dark_is_digit = digit_like(dark.mask) and (not within(dark.mask, light.mask) or rim(gray, light.mask, dark.mask))
    return dark_is_digit and (not digit_like(light.mask) or within(light.mask, dark.mask) or
                              bool(dark.mean_ink() >= light.mean_ink()))


def dim_paper_reading(gray):
    """The dark-ink reading of a dark image that holds no light digit (paper photographed in dim light),
    or None. Only a digit-like shape counts: on paper this dark, the lag of the paper's estimate in a
    corner of a plain gradient reads as strong ink."""
    dark = read_digit(gray)
    return dark if dark.mask is not None and digit_like(dark.mask) else None


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
    top, bottom, left, right = box(inner)
    top2, bottom2, left2, right2 = box(outer)
    return top >= top2 and bottom <= bottom2 and left >= left2 and right <= right2


def digit_like(keep):
    """Whether a digit mask looks like written strokes: clear of the image's edge, and strokes at most
    MAX_STROKE of the digit's size (reading a light digit as dark ink finds the ground between its
    strokes: a blob, or a region that runs to the edge)."""
    if keep[0].any() or keep[-1].any() or keep[:, 0].any() or keep[:, -1].any():
        return False
    top, bottom, left, right = box(keep)
    return stroke_width(keep) <= MAX_STROKE * (max(bottom - top, right - left) + 1)


def read_digit(gray):
    """The Reading of dark ink on lighter paper.

    A rough reading with a wide grey closing gives the strokes' width; the paper's brightness is then
    estimated again with a closing just wider than the strokes (ink_map), which keeps the sharp edge of
    a shadow where a wider window (or a blur) would leave a band of false ink along it. Where the digit
    found is bolder than that width said (thin marks beside it, a lined page's rules or a shadow's edge,
    pulled the average down), the closing would have taken its strokes' middle for paper and left an
    outline: it is read again with a closing as wide as its own strokes."""
    rough = flatten(gray, paper_level(gray, COARSE_CLOSING))
    inked = rough > max(otsu(rough), MIN_INK)
    width = stroke_width(inked)
    reading = digit_mask(ink_map(gray, width))
    if reading.mask is None:
        return reading
    top, bottom, left, right = box(reading.mask)
    bold = thick_width(inked[top:bottom + 1, left:right + 1])
    return digit_mask(ink_map(gray, bold)) if bold > closing_width(width) else reading


def ink_map(gray, width):
    """How much dark ink each pixel holds, 0 (paper) to 1, with the paper's lighting divided out: its
    brightness estimated with a closing wide enough to wipe out strokes `width` pixels wide."""
    return flatten(gray, paper_level(gray, closing_width(width)))


def closing_width(width):
    """The grey-closing window, in pixels, that wipes out strokes about `width` wide: four times that, as
    an average width understates a digit's boldest strokes and the joins between them."""
    return round(4 * width) + 3


def thick_width(mask):
    """The width of the boldest strokes that hold BOLDEST of the mask's pixels: twice the depth (in 3x3
    erosions) that share of them lies at or beyond."""
    m = F.pad(mask.float(), (1, 1, 1, 1))  # paper all round: dilate's padding alone would keep the edges inked
    n = m.sum()
    depth = 0
    while m.sum() > BOLDEST * n:
        m = -dilate(-m, 3)
        depth += 1
    return 2.0 * depth


def subsample(values, at_most):
    """Every k-th of the values, flattened, so that at most about `at_most` remain: statistics of a large
    image from a fraction of its pixels."""
    return values.flatten()[::max(1, values.numel() // at_most)]


def paper_median(gray):
    """The typical (median) pixel, from a sample of at most SAMPLE."""
    return float(subsample(gray, SAMPLE).median())


def dark_tail(gray):
    """Whether the ink looks darker than the paper (a light digit on a dark ground, as a blackboard or
    MNIST's own, is not) where the typical pixel says nothing: the ink is the long tail against a local
    average that follows the lighting, far below it for dark ink, above for light."""
    k = max(5, max(gray.shape) // 6 // 2 * 2 + 1)
    detail = subsample(gray - blur(gray[None, None], k)[0, 0], SAMPLE)
    tail = max(1, len(detail) // 200)
    return bool((-detail).topk(tail).values.mean() >= detail.topk(tail).values.mean())


def flatten(gray, level):
    """Ink darkness: how far each pixel falls below the paper's level, as a share of it. EPS keeps the
    noise in a very dark corner from counting as ink."""
    return (1 - (gray + EPS) / (level + EPS)).clamp(0, 1)


def paper_level(gray, width):
    """The paper's brightness at each pixel: a grey closing (dilate, then erode) with a `width`-pixel window
    wipes out every dark stroke narrower than that. It runs on a copy shrunk so that the window is at
    most CLOSING pixels wide."""
    h, w = gray.shape
    scale = min(1.0, CLOSING / width)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = F.interpolate(gray[None, None], size=size, mode="area")
    k = min(CLOSING, max(3, round(width * scale) // 2 * 2 + 1))
    level = -dilate(-dilate(blur(small, 3), k), k)
    level = torch.maximum(blur(level, 3), small)  # paper is never darker than what is on it
    return F.interpolate(level, size=(h, w), mode="bilinear", align_corners=False)[0, 0]


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

def digit_mask(ink):
    """The Reading of an ink map: its marks (ink_marks), specks and what touches the image's edge dropped,
    the largest remaining component and the pieces near it kept."""
    marks = ink_marks(ink)
    if isinstance(marks, str):
        return Reading(ink, None, marks)
    keep = marks.mask_of(near_main(marks.parts, free_of_edge(marks.parts, marks.candidate, ink.shape)))
    why = too_faint(marks.cleaned, marks.strong, keep) or specks_or_noise(marks.cleaned, keep)
    return Reading(ink, None if why else keep, why, marks)


class Marks(NamedTuple):
    """An ink map's marks: the map with ruled lines taken out, its strong and weak (hysteresis) ink, their
    connected Components, which of them are no specks, and the ink threshold that made them strong."""
    cleaned: torch.Tensor
    strong: torch.Tensor
    weak: torch.Tensor
    parts: "Components"
    candidate: torch.Tensor
    threshold: float

    def mask_of(self, pick):
        """The pixels of the components `pick` marks."""
        keep = torch.zeros_like(self.weak)
        keep[self.weak] = pick[self.parts.inverse]
        return keep


def ink_marks(ink, scale=1.0):
    """The Marks of an ink map: ink above a threshold taken from the image (times `scale`), grouped into
    connected components, specks marked; or why it holds none."""
    cleaned = without_rules(ink)
    threshold = max(scale * otsu(subsample(cleaned, THRESHOLD_SAMPLE)), MIN_INK)
    marks = marks_above(cleaned, cleaned, threshold)
    if marks is None or cleaned[marks.strong].mean() < MIN_CONTRAST:
        return "the image is blank or has too little contrast"
    return marks


def marks_above(cleaned, level, threshold):
    """The Marks of an ink map (`cleaned`, ruled lines taken out) where `level` (that ink, or a reading of it)
    passes the threshold; None where nothing does."""
    strong = level > threshold
    # Hysteresis: a stroke's faint parts join it, far-off grey does not.
    weak = (level > HYSTERESIS * threshold) & (dilate(strong.float(), WEAK_REACH) > 0)
    if not strong.any():
        return None
    parts = Components(cleaned, weak, strong)
    candidate = parts.has_strong & (parts.mass >= MIN_PIECE * parts.mass[parts.has_strong].max())  # specks go
    return Marks(cleaned, strong, weak, parts, candidate, threshold)


class Components:
    """The connected components of the `weak` pixels (or the weak pixels of each component of `joined`, a
    mask that holds them): per component, whether it holds strong ink, its ink mass and its box (top, bottom,
    left, right); `inverse` maps each weak pixel to its component."""

    def __init__(self, ink, weak, strong, joined=None):
        # labels run 1..n, so this is each pixel's component
        self.inverse = components(weak if joined is None else joined)[weak] - 1
        n = int(self.inverse.max()) + 1  # strong ink is weak too, so there is at least one
        self.has_strong = torch.zeros(n, dtype=torch.bool).index_fill_(0, self.inverse[strong[weak]].unique(), True)
        self.mass = torch.zeros(n, dtype=torch.float64).index_add_(0, self.inverse, ink[weak].double())
        self.density = self.mass / torch.bincount(self.inverse, minlength=n)  # mean darkness of each
        ys, xs = weak.nonzero(as_tuple=True)
        far = torch.full((n,), 1 << 30)
        self.box = torch.stack([far.scatter_reduce(0, self.inverse, ys, "amin"),
                                torch.zeros(n, dtype=torch.long).scatter_reduce(0, self.inverse, ys, "amax"),
                                far.scatter_reduce(0, self.inverse, xs, "amin"),
                                torch.zeros(n, dtype=torch.long).scatter_reduce(0, self.inverse, xs, "amax")], 1)


def free_of_edge(parts, candidate, shape):
    """The candidates that stand free of the image's edge, when one of them is substantial; else all.

    What touches the edge is a shadow, a page edge or a neighbouring digit, unless nothing substantial
    stands free of it (a digit cropped tight, or drawn up to the canvas edge). A smaller free shape
    still wins when its ink is denser: the false ink a shadow's edge leaves is faint, just over the
    threshold along a wide band, where a digit's strokes stand well above it."""
    h, w = shape
    box = parts.box
    edge = (box[:, 0] == 0) | (box[:, 1] == h - 1) | (box[:, 2] == 0) | (box[:, 3] == w - 1)
    inside = candidate & ~edge
    if not inside.any():
        return candidate
    mass, density = parts.mass, parts.density
    free, heaviest = heaviest_of(inside, mass), heaviest_of(candidate, mass)
    substantial = mass[free] >= FREE_MASS * mass[heaviest]
    denser = mass[free] >= MIN_FREE_MASS * mass[heaviest] and density[free] >= DENSER * density[heaviest]
    return inside if substantial or denser else candidate


def near_main(parts, candidate):
    """The candidates kept as the digit: the heaviest, and the pieces of some ink within NEAR times its
    size of its box."""
    main = heaviest_of(candidate, parts.mass)
    top, bottom, left, right = parts.box[main].tolist()
    grow = NEAR * max(bottom - top + 1, right - left + 1)
    box = parts.box
    return candidate & (box[:, 1] >= top - grow) & (box[:, 0] <= bottom + grow) & (box[:, 3] >= left - grow) & \
        (box[:, 2] <= right + grow) & (parts.mass >= NEAR_MASS * parts.mass[main])


def too_faint(ink, strong, keep):
    """Why the digit is no digit when its marks are as faint as the paper's own grain, else "".

    Faint pencil is still a digit where the paper around it is clean; grain, noise or a textured sheet as
    dark as it is not. Strokes: their 90th percentile; paper: its 95th, away from the ink (its 99th takes
    in the faint band of false ink that a sharp shadow edge leaves beside bold strokes)."""
    paper = ink[dilate(strong.float(), PAPER_CLEARANCE) == 0]
    if paper.numel() and ink[keep].quantile(0.9) < MIN_SNR * paper.quantile(0.95):
        return "the marks are as faint as the paper's own grain and noise"
    return ""


def heaviest_of(pick, mass):
    """Index of the component with the most ink among those `pick` marks."""
    return int(torch.where(pick, mass, torch.zeros_like(mass)).argmax())


def specks_or_noise(ink, keep):
    """Why the digit mask is no digit when it is a clump of a few specks, or random noise's strongest clump
    (its ink unlike its neighbours', see coherence), else ""."""
    top, bottom, left, right = box(keep)
    if max(bottom - top, right - left) + 1 < MIN_SIZE:
        return "only specks a few pixels across"
    # The paper at its edges too, and enough of it that a narrow 1 or a clump of specks is judged on
    # COHERENCE_AREA pixels where the image has them.
    pad = max(2, math.ceil((math.sqrt(COHERENCE_AREA) - min(bottom - top, right - left) - 1) / 2))
    around = ink[max(0, top - pad):bottom + pad + 1, max(0, left - pad):right + pad + 1]
    if around.numel() >= COHERENCE_AREA and coherence(around) < MIN_COHERENCE:
        return "the image is noise: its dark pixels form no strokes"
    return ""


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
    """Labels 1..n of the 8-connected components of a boolean (H, W) mask, 0 off the mask: a digit's
    strokes often touch only at a corner, so diagonal neighbours join."""
    labels, _ = ndimage.label(mask.numpy(), structure=np.ones((3, 3), dtype=bool))
    return torch.from_numpy(labels).long()
