"""Several digits in one image (a ZIP code, an amount) -> each digit as MNIST's 28x28, left to right.

    reading = found_digit(read_image(data))          # preprocess.py: polarity, lighting, ink
    digits = read_number(reading, recognise)          # [Digit(image (1, 28, 28) uint8, box), ...]

The ink preprocess.py finds is grouped into digits: marks that share columns are one digit (a 5's detached
bar, a 4 drawn in two strokes, a stroke broken by a faint pen), so a sloping line and digits of different
heights read as well as a straight one; so are marks a faint stroke ties together, and narrow neighbours that
read best as one (a printed 0 photographed small, its hairlines gone). Marks much smaller than the digits
beside them and under none of them (dots, commas, specks), or far above or below them (a ruled line's pieces),
are skipped. A mark too wide for one digit may be digits that touch, as handwriting often has them: it is cut
where its ink is thinnest, into two or three, and the cut that reads best is kept, as LeCun's cheque readers
did (`recognise` is the digit model: (N, 1, 28, 28) uint8 in, (N, 10) probabilities out; nothing here imports
it). That model reads stray pieces of strokes, and two digits squeezed into one box, confidently too, so a
cut's pieces are read from a few views (slightly turned, scaled, moved: a stray piece's reading drifts, a
whole digit's holds), and a reader of the whole uncut mark (model.MarkReader, reader.pth, trained by
train_reader.py on touching MNIST training digits) says how likely the mark is to hold that many digits, those
digits. It reads touching digits better than their cut pieces read alone, so a cut piece's digit is what both
read it as: the geometric mean of their probabilities, which a product of two confident readers would
overstate (EXPERIMENTS.md, "Reading whole numbers"). The threshold that bold digits set can lose a light
digit's thin strokes, so the number is read once more at a lower one, and the reading whose least sure digit
is surer is kept.
"""
import functools
import itertools
import math
import os
from typing import NamedTuple

import torch
import torch.nn.functional as F

from cli import UserError
from imageops import dilate, frame_wide
from model import MarkReader
from preprocess import (
    DENSER,
    MIN_INK,
    SAMPLE,
    Components,
    Reading,
    box,
    components,
    cut_out,
    digit_like,
    framed,
    free_of_edge,
    ink_marks,
    marks_above,
    subsample,
)

DIGIT_HEIGHT = 0.5   # a mark at least this share of the digits' typical height can be a digit of its own
SHARED = 0.5         # marks are one digit when they share at least this share of the narrower one's columns
ROW_REACH = 0.5      # ... a small mark only when it is within this share of the digits' height above or below one
SMALL = 0.6          # a mark under this share of the digits' typical height and width may be a separator ...
TINY = 0.3           # ... and is one when under this share (a dot or a speck anywhere on the line), ...
LOW = 0.2            # ... or when its middle is this share of that height below its neighbours' (a comma)
FAINT = 0.5          # a second look for fainter digits, at this share of the ink threshold, ...
FAINT_GAP = 0.15     # ... their pieces within this share of the digits' height of each other one digit, ...
FAINT_MASS = 0.15    # ... with at least this share of the lightest digit's ink (the paper's grain has less) ...
FAINT_SIZE = 1.3     # ... and no taller or wider than this many of the tallest digit's heights; their
FAINT_SPECK = 0.01   # pieces with less than this share of the lightest digit's ink are grain (not joined)
BODY_MASS = 0.25     # marks with this share of the heaviest one's ink set the digits' height
GAP = 0.03           # marks closer than this share of the tallest digit's height are one digit, when
ONE_WIDE = 0.9       # together no wider than this share of their height
EDGE_HEIGHT = 1.3    # a mark touching the image's edge is kept when at most this many digit heights tall ...
EDGE_WIDTH = 3.5     # ... and this many wide (a digit cropped tight; a shadow or a page edge is larger), and
                     # its ink about as dense as theirs
WIDER = 1.7          # a mark wider than this many of its line's typical digit widths may be touching digits ...
LONE = 0.9           # ... and a lone mark wider than this share of its height (MNIST's median digit: 0.8)
NARROWEST = 0.15     # a cut leaves each piece at least this share of the height wide (a 1 is about 0.2)
STRIDE = 0.1         # cuts start every this share of the height across a wide mark
FRAGMENT = 0.15      # a cut piece's marks with less than this share of its heaviest one's ink are the
                     # neighbour's stroke ends, left out of it
REACH = 0.25        # a cut's path strays at most this share of the height from its column ...
STEP = 0.1          # ... and pays this much (in ink pixels) for straying that far, so it runs straight where it can
LINK = 0.35         # marks joined by ink this share of the threshold along a stroke (a hairline the threshold
STROKE = 7          # broke) are one digit when together no wider than one; that ink averaged along this many
                    # pixels of a line at any of eight angles, so that a stroke stands out of the paper's grain
NOISE = 8           # faint digits are the ink this many times the paper grain's spread above the paper, ...
FAINTEST = 0.03     # ... and at least this dark (on paper without grain)
PIECE = 0.45        # neighbouring marks each no wider than this share of their height may be the pieces of one
                    # digit whose hairlines vanished (a 0's two sides); the model and the reader decide
WHOLE = 0.25        # weight of the reader's log-probability of a cut's digits, read from the whole mark
READER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reader.pth")  # train_reader.py writes it
SECOND_LOOK = 0.5  # a number is read again with its ink threshold at this share (read_number)
MUST_CUT = 2.0     # a mark wider than this share of its height is cut (one MNIST training digit in 10,000 is)
# The views a cut's pieces are read from: (turn in degrees, scale, move right, move down; a move in shares
# of half the 28-pixel field, so 0.12 is under two pixels)
VIEWS = [(0, 1, 0, 0), (12, 1, 0, 0), (-12, 1, 0, 0), (0, 0.85, 0, 0), (0, 1.15, 0, 0),
         (0, 1, 0.12, 0), (0, 1, -0.12, 0), (0, 1, 0, 0.12), (0, 1, 0, -0.12)]


class Digit(NamedTuple):
    """One digit of a number: MNIST's 28x28, its box (left, top, right, bottom, inclusive) in the image
    that preprocess.py read (at most WORK_SIZE a side), and its probabilities (10,): the digit model's,
    or for a piece of touching digits, the geometric mean of that and the reader's."""
    image: torch.Tensor
    box: tuple
    probabilities: torch.Tensor


def groups(reading):
    """The digits' marks, left to right: a boolean mask per digit (possibly digits that touch), from the
    Marks of a Reading that found a digit (preprocess.found_digit). Empty when nothing digit-sized is there."""
    marks = reading.marks
    parts = marks.parts
    boxes = parts.box  # top, bottom, left, right
    height, width = sizes(boxes)
    keep = kept_at_edge(parts, marks.candidate, reading.ink.shape)
    index = keep.nonzero().flatten().tolist()
    if not index:
        return []
    heaviest = float(parts.mass[index].max())
    tallest = float(height[[i for i in index if parts.mass[i] >= BODY_MASS * heaviest]].max())
    tall = [i for i in index if height[i] >= DIGIT_HEIGHT * tallest]
    near = nearby(marks, keep, tallest)
    link = linked(marks, keep)
    joined = {i: {i} for i in tall}
    for a, b in itertools.combinations(tall, 2):
        broken = (near[a] == near[b] or link[a] == link[b]) and narrow(boxes[a], boxes[b])
        if (broken or shared_columns(boxes[a], boxes[b]) >= SHARED * min(width[a], width[b])) and \
                joined[a] is not joined[b]:
            union = joined[a] | joined[b]
            for i in union:
                joined[i] = union
    digits = {id(g): g for g in joined.values()}
    rows = {id(g): (min(int(boxes[j][0]) for j in g), max(int(boxes[j][1]) for j in g)) for g in digits.values()}
    for i in index:
        if i in joined:
            continue
        # A small mark belongs to the digit whose columns hold most of it, if near it in height (a ruled
        # line's pieces far below do not); one under none is a separator.
        near_rows = [g for g in digits.values() if row_gap(boxes[i], rows[id(g)]) <= ROW_REACH * tallest]
        best = max(near_rows, key=lambda g: max(shared_columns(boxes[i], boxes[j]) for j in g), default=None)
        if best and max(shared_columns(boxes[i], boxes[j]) for j in best) >= SHARED * width[i]:
            best.add(i)
            continue
        # ... or the one digit a stroke ties it to (a 7's bar, its stem's top a vanished hairline)
        tied = [g for g in digits.values() if any(link[j] == link[i] for j in g) and narrow(boxes[i], span(boxes, g))]
        if len(tied) == 1:
            tied[0].add(i)
    found = [mask_of_parts(marks, g) for g in digits.values()]
    found = sorted(found + faint_digits(reading.ink, found, tallest), key=lambda m: int(m.any(0).nonzero()[0]))
    spans = torch.tensor([box(m) for m in found]).reshape(-1, 4)
    return [m for k, m in enumerate(found) if not separator(spans, k)]


def faint_digits(ink, found, tallest):
    """Digits fainter than the threshold the others set (a pen running dry, a thin stroke photographed small):
    the marks above FAINT of that threshold clear of the digits found and on their line, joined where within
    FAINT_GAP of the digits' height of each other (such a stroke breaks into pieces; the grain's specks,
    under FAINT_SPECK, join nothing, or a dot and the grain around it would make a digit), each group
    digit-sized (up to FAINT_SIZE), clear of the image's edge and holding FAINT_MASS of the lightest digit's
    ink: a bold digit beside it says nothing of how much ink a faint one holds."""
    marks = ink_marks(ink, FAINT)
    if isinstance(marks, str) or not found:
        return []
    taken = torch.stack(found).any(0)
    rows, columns = taken.any(1).nonzero().flatten(), taken.any(0)
    top, bottom, left, right = marks.parts.box.T
    before = F.pad(columns.long().cumsum(0), (1, 0))  # how many of the columns left of each are taken
    lightest = min(float(ink[m].sum()) for m in found)
    pieces = marks.mask_of(marks.parts.has_strong & (marks.parts.mass >= FAINT_SPECK * lightest) &
                           (before[right + 1] == before[left]) & (bottom >= rows[0]) & (top <= rows[-1]))
    if not pieces.any():
        return []
    reach = max(1, round(FAINT_GAP * tallest)) * 2 + 1
    joined = Components(ink, pieces, pieces & marks.strong, dilate(pieces.float(), reach) > 0)
    (top, bottom, left, right), (height, width), (h, w) = joined.box.T, sizes(joined.box), ink.shape
    keep = ((height >= DIGIT_HEIGHT * tallest) & (height <= FAINT_SIZE * tallest) & (width <= FAINT_SIZE * tallest) &
            (top > 0) & (left > 0) & (bottom < h - 1) & (right < w - 1) &
            (joined.mass >= FAINT_MASS * lightest))
    extra = []
    for k in keep.nonzero().flatten().tolist():
        mask = torch.zeros_like(pieces)
        mask[pieces] = joined.inverse == k
        extra.append(mask)
    return extra


def span(boxes, index):
    """The box (top, bottom, left, right) that holds the boxes numbered in `index`."""
    held = boxes[list(index)]
    return [int(held[:, 0].min()), int(held[:, 1].max()), int(held[:, 2].min()), int(held[:, 3].max())]


def row_gap(a, rows):
    """How many rows lie between a box (top, bottom, left, right) and a span of rows (top, bottom): 0 where
    they overlap."""
    return max(0, int(a[0]) - rows[1], rows[0] - int(a[1]))


def sizes(boxes):
    """Heights and widths of boxes (top, bottom, left, right), inclusive."""
    return boxes[:, 1] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 2] + 1


def mask_of_parts(marks, index):
    """The pixels of the Marks' components numbered in `index`."""
    return marks.mask_of(torch.isin(torch.arange(len(marks.parts.mass)), torch.tensor(list(index))))


def separator(spans, k):
    """Whether group k of a line's groups (their boxes: top, bottom, left, right, left to right) is a dot,
    a comma or a speck rather than a digit: small beside the line's digits and, unless tiny, low on the
    line (below the middle of the groups either side of it)."""
    height, width = spans[:, 1] - spans[:, 0] + 1, spans[:, 3] - spans[:, 2] + 1
    typical = float(height.float().median())
    if height[k] >= SMALL * typical or width[k] >= SMALL * typical or len(spans) == 1:
        return False
    if height[k] < TINY * typical and width[k] < TINY * typical:
        return True
    middle = (spans[:, 0] + spans[:, 1]).float() / 2
    beside = [j for j in (k - 1, k + 1) if 0 <= j < len(spans)]
    return float(middle[k] - middle[beside].mean()) >= LOW * typical


def nearby(marks, keep, tallest):
    """For each mark, a label shared by the kept marks within a few pixels of it (GAP of the tallest digit's
    height): a stroke that a faint pen or a hairline broke is one again, where digits written apart stay apart."""
    reach = max(1, round(GAP * tallest)) * 2 + 1
    return labels_of(marks, dilate(marks.mask_of(keep).float(), reach) > 0)


def labels_of(marks, region):
    """For each mark, the label of the connected component of `region` (a mask that holds the kept marks)
    that it lies in."""
    labels = components(region)
    label = torch.zeros(len(marks.parts.mass), dtype=torch.long)
    label.scatter_reduce_(0, marks.parts.inverse, labels[marks.weak], "amax")
    return label.tolist()


@functools.cache
def line_kernels(length):
    """Eight (8, 1, length, length) kernels that average along a line through the centre, at 0, 22.5, ...,
    157.5 degrees."""
    kernels = torch.zeros(8, 1, length, length)
    middle = (length - 1) / 2
    for k in range(8):
        angle = math.pi * k / 8
        for t in torch.linspace(-middle, middle, 4 * length).tolist():
            kernels[k, 0, round(middle + t * math.sin(angle)), round(middle + t * math.cos(angle))] = 1
    return kernels / kernels.sum((2, 3), keepdim=True)


def strokes(ink):
    """The ink map averaged along STROKE pixels of a line at whichever of eight angles is darkest: a stroke
    keeps its darkness, the paper's grain averages out."""
    return F.conv2d(ink[None, None], line_kernels(STROKE), padding=STROKE // 2)[0].amax(0)


def linked(marks, keep):
    """For each mark, a label shared by the kept marks that ink joins along a stroke (strokes) at LINK of the
    threshold: a hairline that the threshold broke."""
    return labels_of(marks, marks.mask_of(keep) | (strokes(marks.cleaned) > LINK * marks.threshold))


def in_strokes(marks):
    """The Marks to read a number from: the reading's own; where its ink is so faint that the threshold fell to
    its floor (preprocess.MIN_INK: pencil, a deep shadow, digits barely darker than the paper's grain), with
    the ink added that stands NOISE times the grain's spread above the paper once averaged along a stroke
    (strokes)."""
    if marks.threshold > MIN_INK:
        return marks
    along = strokes(marks.cleaned)
    sample = subsample(along, SAMPLE)
    median = sample.median()
    spread = 1.4826 * (sample - median).abs().median()  # the grain's standard deviation, robustly
    # Ink at the threshold, or a stroke at NOISE spreads: what either finds is a mark. A stroke's ends
    # average in paper; the paper is no mark.
    level = torch.maximum(marks.cleaned, along * (marks.threshold / max(float(median + NOISE * spread), FAINTEST)))
    return marks_above(marks.cleaned, torch.where(marks.cleaned > 0, level, 0), marks.threshold)


def narrow(a, b):
    """Whether two boxes (top, bottom, left, right) together are no wider than one digit (ONE_WIDE of their height)."""
    width = max(a[3], b[3]) - min(a[2], b[2]) + 1
    return int(width) <= ONE_WIDE * int(max(a[1], b[1]) - min(a[0], b[0]) + 1)


def kept_at_edge(parts, candidate, shape):
    """The marks that may be digits: those free of the image's edge (preprocess.free_of_edge), and those
    touching it that are digit-sized, as the first and last digits of a number cropped tight are."""
    free = free_of_edge(parts, candidate, shape)
    if free.equal(candidate):
        return candidate
    height, width = sizes(parts.box)
    tallest = float(height[free].max())
    dense = parts.density >= float(parts.density[free].median()) / DENSER  # a shadow's false ink is faint
    return free | (candidate & dense & (height <= EDGE_HEIGHT * tallest) & (width <= EDGE_WIDTH * tallest))


def shared_columns(a, b):
    """How many columns two boxes (top, bottom, left, right) share."""
    return max(0, int(min(a[3], b[3]) - max(a[2], b[2])) + 1)


def several(reading):
    """Whether the image plainly holds several digits side by side: two or more digit-sized groups that look
    like strokes clear of the image's edge (preprocess.digit_like: a shadow's or a page's edge does not), each
    clear of the next one's columns."""
    inside = [box(m) for m in groups(reading) if digit_like(m)]
    return len(inside) >= 2 and all(a[3] < b[2] for a, b in itertools.pairwise(inside))


def read_number(reading, recognise, name="image"):
    """The Digits of a Reading, left to right; touching digits cut apart where the model reads them best. The
    number is read twice: from the Reading's own marks, and from the marks above SECOND_LOOK of its threshold
    (a high-contrast font's hairlines and a 7's light bar, lost at the threshold bold digits set, hold
    there); the reading whose least sure digit is surer is kept. A UserError when nothing there is
    digit-sized."""
    looks = [reading.marks]
    lower = ink_marks(reading.ink, SECOND_LOOK)
    if not isinstance(lower, str) and lower.threshold < reading.marks.threshold:  # not both at the floor
        looks.append(lower)
    readings = [digits_of(reading._replace(marks=marks), recognise) for marks in looks]
    readings = [digits for digits in readings if digits]
    if not readings:
        raise UserError(f"{name}: no digit found (only specks or separators)")
    return max(readings, key=lambda digits: min(float(d.probabilities.max()) for d in digits))


def digits_of(reading, recognise):
    """The Digits that a Reading's marks group into (read_number), or [] when nothing there is digit-sized."""
    masks = groups(reading._replace(marks=in_strokes(reading.marks)))
    if not masks:
        return []
    masks = merged(reading.ink, masks, recognise)
    widest = widest_digit(masks)
    pieces = [piece for mask in masks for piece in best_cut(reading.ink, mask, recognise, widest)]
    images = torch.stack([image for image, _, _ in pieces])
    digits = []
    for (image, place, whole), probs in zip(pieces, recognise(images), strict=True):
        if whole is not None:
            probs = (probs * whole.exp()).sqrt()
            probs = probs / probs.sum()
        digits.append(Digit(image, place, probs))
    return digits


def images_of(digits):
    """The Digits' 28x28 images as one (K, 1, 28, 28) batch, left to right."""
    return torch.stack([d.image for d in digits])


def probabilities_of(digits):
    """The Digits' probabilities as one (K, 10) batch, left to right."""
    return torch.stack([d.probabilities for d in digits])


def number_read(probs):
    """The number a batch of digits' probabilities (K, 10) reads as: its most probable digits, as text."""
    return "".join(str(int(d)) for d in probs.argmax(1))


def widest_digit(masks):
    """How wide one digit on this line can be: WIDER times the median width of the groups no wider than
    tall, when there are two or more; else LONE times the tallest group's height (a lone mark may be
    two digits touching)."""
    sizes = [(int(m.any(0).sum()), int(m.any(1).sum())) for m in masks]
    narrow = [w for w, h in sizes if w <= h]
    if len(narrow) >= 2:
        return WIDER * float(torch.tensor(narrow, dtype=torch.float).median())
    return LONE * max(h for _, h in sizes)


def best_cut(ink, mask, recognise, widest):
    """The pieces of one group's mask, as (28x28 image, box, the reader's log-probabilities (10,) for its
    place, or None when uncut): uncut, or cut into two or three where the ink is thinnest when it is wider
    than `widest`. The option that fits best (fits) is kept. A mark wider than MUST_CUT of its height is no
    single digit: it is cut."""
    width, height = int(mask.any(0).sum()), int(mask.any(1).sum())
    options = [[mask]] + (cuts(ink, mask) if width > widest else [])
    if len(options) == 1:
        return [(framed(Reading(ink, mask)), box_of(mask), None)]
    scores, images, places = fits(ink, mask, options, recognise)
    if width > MUST_CUT * height:
        scores[0] = -math.inf
    best = max(range(len(options)), key=scores.__getitem__)
    start, n = sum(len(option) for option in options[:best]), len(options[best])
    if n == 1:
        return [(images[start], box_of(mask), None)]
    whole = places[MarkReader.PLACES[n - 1]:MarkReader.PLACES[n - 1] + n]
    return [(images[start + i], box_of(p), whole[i]) for i, p in enumerate(options[best])]


def fits(ink, mask, options, recognise):
    """How well each option (a list of masks, left to right, that together make `mask`) reads: the mean
    log-probability of the model's reading of its pieces from VIEWS, plus WHOLE times the reader's
    log-probability that `mask` holds that many digits, those digits. Also the pieces' images, in the
    options' order, and the reader's place log-probabilities."""
    count, places = whole_reading(ink, mask)
    flat = [p for option in options for p in option]
    images = torch.stack([framed(Reading(ink, p)) for p in flat])
    top, digit = steady_reading(images, recognise)
    scores, start = [], 0
    for option in options:
        n = len(option)
        read = count[n - 1] + places[MarkReader.PLACES[n - 1] + torch.arange(n), digit[start:start + n]].sum()
        scores.append(float(top[start:start + n].mean() + WHOLE * read))
        start += n
    return scores, images, places


def merged(ink, masks, recognise):
    """The groups, with neighbours that are pieces of one digit (each no wider than PIECE of their height,
    together no wider than one digit; up to three) joined where that fits best: of every way to join such a
    run into pieces no wider than one digit, the one best_cut's score (fits) ranks first."""
    runs = [[masks[0]]]
    for mask in masks[1:]:
        a, b = box(runs[-1][-1]), box(mask)
        height = max(a[1], b[1]) - min(a[0], b[0]) + 1
        if len(runs[-1]) < 3 and narrow(a, b) and max(a[3] - a[2], b[3] - b[2]) + 1 <= PIECE * height:
            runs[-1].append(mask)
        else:
            runs.append([mask])
    out = []
    for run in runs:
        options = [pieces for pieces in ([functools.reduce(torch.logical_or, run[i:j]) for i, j in part]
                                         for part in partitions(len(run)))
                   if all(narrow(box(p), box(p)) for p in pieces)]
        if len(options) <= 1:  # a lone group, or one way only
            out.extend(options[0] if options else run)
            continue
        scores = fits(ink, functools.reduce(torch.logical_or, run), options, recognise)[0]
        out.extend(options[max(range(len(options)), key=scores.__getitem__)])
    return out


def partitions(n):
    """Every way to split n things in a row into runs, each as [(start, end), ...]."""
    if n == 0:
        return [[]]
    return [[(0, k)] + [(i + k, j + k) for i, j in rest] for k in range(1, n + 1) for rest in partitions(n - k)]


def cuts(ink, mask):
    """Every cut of a mask tried (cut, from each of cut_points), each distinct one once: paths from nearby
    columns often meet."""
    seen, options = set(), []
    for option in (cut(ink, mask, at) for at in cut_points(mask)):
        key = tuple(int(p.sum()) for p in option)
        if option and key not in seen:
            seen.add(key)
            options.append(option)
    return options


@functools.cache
def reader():
    """The MarkReader in READER, ready to ask."""
    net = MarkReader()
    net.load_state_dict(torch.load(READER, map_location="cpu", weights_only=True))
    return net.eval()


def whole_reading(ink, mask):
    """The reader's log-probabilities for the uncut mark: of one, two and three digits (3,), and of each
    place's digit for each count (6, 10; MarkReader.PLACES)."""
    with torch.inference_mode():
        count, places = reader()(frame_wide(cut_out(Reading(ink, mask)))[None].float() / 255)
    return count[0], places[0]


def steady_reading(images, recognise):
    """Each of (N, 1, 28, 28) uint8 images' most probable digit over VIEWS of it, and the log of its
    probability there: the mean over the views."""
    turn, scale, right, down = torch.tensor(VIEWS, dtype=torch.float).T[:, :, None]
    cos, sin = torch.cos(torch.deg2rad(turn)) / scale, torch.sin(torch.deg2rad(turn)) / scale
    # theta maps each view's coordinates to the image's: turned, then scaled, then moved
    theta = torch.stack([torch.cat([cos, -sin, -right], 1), torch.cat([sin, cos, -down], 1)], 1)
    n = len(images)
    grid = F.affine_grid(theta.repeat_interleave(n, 0), (len(VIEWS) * n, 1, 28, 28), align_corners=False)
    seen = F.grid_sample(images.float().repeat(len(VIEWS), 1, 1, 1), grid, align_corners=False)
    probs = recognise(seen.round().clamp(0, 255).to(torch.uint8)).reshape(len(VIEWS), n, 10).mean(0)
    top, digit = probs.max(1)
    return top.clamp_min(1e-9).log(), digit


def cut_points(mask):
    """The columns to start cuts from, one every STRIDE of the height, and pairs of them, each leaving a piece at
    least NARROWEST of the height wide (cut_path then finds where the ink is thinnest near each)."""
    rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
    height = int(rows[-1] - rows[0]) + 1
    left, right = int(cols[0]), int(cols[-1])
    margin = max(1, round(NARROWEST * height))
    starts = list(range(left + margin, right - margin + 1, max(1, round(STRIDE * height))))
    return [(x,) for x in starts] + [(a, b) for a, b in itertools.combinations(starts, 2) if b - a >= margin]


def cut(ink, mask, at):
    """The mask cut into pieces along a path from its top to its bottom near each of columns `at`, the path
    crossing the least ink (cut_path: two digits that overlap, not only touch, come apart whole); marks with
    less than FRAGMENT of their piece's heaviest one's ink (stray stroke ends) left out. [] when a piece
    would be empty."""
    rows = mask.any(1).nonzero().flatten()
    top, bottom = int(rows[0]), int(rows[-1])
    xs = torch.arange(mask.shape[1])
    side = torch.zeros(mask.shape, dtype=torch.long)
    for x in at:
        path = cut_path(mask[top:bottom + 1], x, max(1, round(REACH * (bottom - top + 1))))
        side[top:bottom + 1] += xs[None, :] > path[:, None]
    pieces = []
    for k in range(len(at) + 1):
        piece = mask & (side == k)
        if not piece.any():
            return []
        pieces.append(without_fragments(ink, piece))
    return pieces


def cut_path(mask, x, reach):
    """For each row of `mask`, the column a path from its top to its bottom passes, starting within `reach`
    of column x and staying there, each row one column at most from the last: the path that crosses the
    fewest ink pixels (dynamic programming), straight down where several do."""
    lo, hi = max(0, x - reach), min(mask.shape[1] - 1, x + reach)
    cost = mask[:, lo:hi + 1].float() + STEP * (torch.arange(lo, hi + 1) - x).abs() / reach
    total, came = cost[0].clone(), []
    for row in cost[1:]:
        options = torch.stack([F.pad(total, (1, 0), value=float("inf"))[:-1], total,
                               F.pad(total, (0, 1), value=float("inf"))[1:]])
        best, move = options.min(0)
        came.append(move - 1)
        total = row + best
    path = [int(total.argmin())]
    for move in reversed(came):
        path.append(path[-1] + int(move[path[-1]]))
    return torch.tensor(path[::-1]) + lo


def without_fragments(ink, piece):
    """A cut piece's connected marks with at least FRAGMENT of its heaviest one's ink (per label, as
    preprocess.Components sums it, without the boxes and densities it also works out: this runs for every
    piece of every cut tried)."""
    labels = components(piece)
    if int(labels.max()) <= 1:
        return piece
    mass = torch.zeros(int(labels.max()) + 1, dtype=torch.float64).index_add_(0, labels.flatten(),
                                                                              ink.flatten().double())
    mass[0] = 0
    return piece & (mass >= FRAGMENT * mass.max())[labels]


def box_of(mask):
    top, bottom, left, right = box(mask)
    return left, top, right, bottom
