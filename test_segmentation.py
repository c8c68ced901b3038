"""segmentation.py: digits apart, the pieces of one digit, a sloping line, separators skipped, touching digits
cut where the model reads them best; and when a single-digit reading says the image holds several."""
import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

import eval_sets
import number_sets
import segmentation
from inference import probabilities
from model import MarkReader
from plots import gray_png
from preprocess import MIN_INK, found_digit, read_image


@pytest.fixture(scope="module")
def clearest(trained, mnist_test):
    """For each digit, the float ink mask of the MNIST test image (of the first 2,000) the model reads it
    most confidently in: these tests are about segmentation, not about hard digits."""
    images, labels = mnist_test
    probs = probabilities(trained.model, images[:2000])
    masks = {}
    for d in range(10):
        score = torch.where(labels[:2000] == d, probs[:, d], torch.zeros(()))
        masks[d] = images[int(score.argmax()), 0].numpy().astype(np.float32) / 255
    return masks


def reading_of(png):
    return found_digit(read_image(png))


def number_png(mask):
    """A float ink mask as dark ink on white with a margin: PNG bytes."""
    return gray_png(((1 - np.pad(mask, 30)) * 255).round().astype(np.uint8))


def grainy_png(mask, grain, rng):
    """A float ink mask as dark ink on light grey paper (0.9) with Gaussian grain of deviation `grain`, and a
    margin: PNG bytes."""
    gray = 0.9 * (1 - np.pad(mask, 30)) + rng.normal(0, grain, np.add(mask.shape, 60))
    return gray_png((gray.clip(0, 1) * 255).round().astype(np.uint8))


def in_a_row(digits, gap=20):
    """Float masks placed left to right on one line, `gap` pixels apart: [(mask, left, top), ...] for canvas."""
    placed, x = [], 0
    for digit in digits:
        placed.append((digit, x, 0))
        x += digit.shape[1] + gap
    return placed


def read(trained, png):
    digits = segmentation.read_number(reading_of(png), lambda x: probabilities(trained.model, x))
    return segmentation.number_read(segmentation.probabilities_of(digits))


def strokes_png(strokes, size=(200, 130), width=7):
    """Black strokes (lists of points) on white, as a drawn image: PNG bytes."""
    img = Image.new("L", size, 255)
    draw = ImageDraw.Draw(img)
    for stroke in strokes:
        draw.line(stroke, fill=0, width=width, joint="curve")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_digits_written_apart_are_read_left_to_right(trained, clearest, seed):
    rng = np.random.default_rng(seed)
    digits = rng.integers(0, 10, 5).tolist()
    png = number_png(number_sets.apart([clearest[d] for d in digits], rng))
    masks = segmentation.groups(reading_of(png))
    assert len(masks) == 5
    lefts = [int(m.any(0).nonzero()[0]) for m in masks]
    assert lefts == sorted(lefts)
    assert read(trained, png) == "".join(map(str, digits))


def test_a_sloping_line_of_digits_of_different_heights(trained, clearest):
    placed, x = [], 0
    for k, d in enumerate([3, 1, 4, 7]):
        mask = number_sets.scaled(eval_sets.crop(clearest[d]), [40, 60, 48, 70][k])
        placed.append((mask, x, 100 - x // 3 - mask.shape[0]))  # the baseline climbs a third of a pixel a column
        x += mask.shape[1] + 14
    png = number_png(number_sets.canvas(placed))
    assert len(segmentation.groups(reading_of(png))) == 4
    assert read(trained, png) == "3147"


def test_the_pieces_of_one_digit_stay_one(trained):
    five = [[(20, 20), (60, 20)], [(22, 28), (20, 55), (45, 50), (58, 68), (50, 95), (20, 95)]]  # its bar apart
    four = [[(110, 20), (100, 70), (155, 70)], [(140, 78), (140, 108)]]  # a stem that does not reach its bar
    png = strokes_png(five + four)
    reading = reading_of(png)
    parts = segmentation.ink_marks(reading.ink).parts
    assert len(parts.mass) >= 4  # four separate marks ...
    assert len(segmentation.groups(reading)) == 2  # ... are two digits
    assert read(trained, png) == "54"


def test_marks_a_faint_stroke_ties_are_one_digit(trained):
    """A 7 whose stem thins to a hairline far under the threshold (a printed 7 photographed small): its bar and
    the stem's foot are one digit."""
    img = Image.new("L", (200, 130), 255)
    draw = ImageDraw.Draw(img)
    draw.line([(20, 20), (75, 20)], fill=60, width=9)
    draw.line([(73, 24), (58, 62)], fill=170, width=2)  # the hairline, broken at the threshold
    draw.line([(58, 62), (42, 110)], fill=60, width=9)
    for stroke in ([(140, 20), (115, 75), (175, 75)], [(160, 45), (160, 110)]):  # a 4
        draw.line(stroke, fill=60, width=9, joint="curve")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    reading = reading_of(buf.getvalue())
    assert len(segmentation.ink_marks(reading.ink).parts.mass) >= 3  # the 7 in two marks
    assert len(segmentation.groups(reading)) == 2
    assert read(trained, buf.getvalue()) == "74"


def test_narrow_pieces_that_read_as_one_digit_are_one(trained, clearest):
    """A 0 whose top and bottom vanished, two arcs a gap apart between a 3 and an 8: joined, as the model
    and the reader read them best."""
    img = Image.new("L", (60, 60), 0)
    ImageDraw.Draw(img).arc((12, 2, 48, 58), 108, 252, fill=255, width=4)
    ImageDraw.Draw(img).arc((12, 2, 48, 58), -72, 72, fill=255, width=4)
    zero = eval_sets.crop(np.asarray(img, np.float32) / 255)
    digits = [number_sets.scaled(eval_sets.crop(clearest[d]), 60) for d in (3, 8)]
    digits.insert(1, zero)
    png = number_png(number_sets.canvas(in_a_row(digits)))
    assert len(segmentation.groups(reading_of(png))) == 4  # the 0 in two pieces ...
    assert read(trained, png) == "308"  # ... read as one


def test_dots_commas_and_specks_between_digits_are_skipped(trained, clearest):
    rng = np.random.default_rng(5)
    one, two, five = (number_sets.scaled(eval_sets.crop(clearest[d]), 60) for d in (1, 2, 5))
    comma, dot = number_sets.separator(60, rng), number_sets.separator(60, np.random.default_rng(0))
    speck = np.ones((3, 3), np.float32)
    placed = [(one, 0, -60), (comma, one.shape[1] + 12, -comma.shape[0] + 6), (two, one.shape[1] + 40, -60),
              (speck, one.shape[1] + two.shape[1] + 55, -30), (dot, one.shape[1] + two.shape[1] + 70, -dot.shape[0]),
              (five, one.shape[1] + two.shape[1] + 100, -60)]
    png = number_png(number_sets.canvas(placed))
    assert len(segmentation.groups(reading_of(png))) == 3
    assert read(trained, png) == "125"


def test_a_faint_digit_broken_into_pieces_is_found(trained, clearest):
    """A digit far fainter than its neighbours (a pen running dry), its stroke broken into slices at the
    threshold, none of them digit-sized: its pieces are one digit, in its place."""
    digits = [number_sets.scaled(eval_sets.crop(clearest[d]), 60) for d in (3, 0, 8)]
    digits[1] = digits[1] * 0.3
    digits[1][::8] = digits[1][1::8] = 0  # two rows in eight left blank
    png = number_png(number_sets.canvas(in_a_row(digits)))
    reading = reading_of(png)
    heights = segmentation.sizes(segmentation.ink_marks(reading.ink, segmentation.FAINT).parts.box)[0]
    assert sorted(heights.tolist())[-3] < segmentation.DIGIT_HEIGHT * 60  # only the 3 and the 8 are digit-sized
    assert read(trained, png) == "308"


@pytest.mark.parametrize("bold, wide", [(5, 50), (1, 75)])
def test_a_faint_digit_beside_a_bold_one_or_wider_than_tall_is_found(trained, clearest, bold, wide):
    """A faint 2 between an 8 and a 3 that the threshold finds: with under a tenth of a bold 8's ink, or
    wider than the digits beside it are tall."""
    eight = np.pad(number_sets.scaled(eval_sets.crop(clearest[8]), 60), 4)
    eight = np.asarray(Image.fromarray((eight * 255).astype(np.uint8)).filter(ImageFilter.MaxFilter(bold)),
                       np.float32) / 255
    two = Image.fromarray((number_sets.scaled(eval_sets.crop(clearest[2]), 50) * 255).astype(np.uint8))
    two = np.asarray(two.resize((wide, 50), Image.BICUBIC), np.float32) / 255 * 0.3
    png = number_png(number_sets.canvas(in_a_row([eight, two, number_sets.scaled(eval_sets.crop(clearest[3]), 60)])))
    reading = reading_of(png)
    assert reading.marks.threshold > 0.3  # the 2 is fainter than the threshold
    assert read(trained, png) == "823"


@pytest.mark.parametrize("grain", [0.05, 0.07])
def test_a_dot_on_grainy_paper_is_no_faint_digit(trained, clearest, grain):
    """The grain's specks around a dot, joined to it, would make a digit-sized faint mark."""
    rng = np.random.default_rng(0)
    three, eight = (number_sets.scaled(eval_sets.crop(clearest[d]), 60) for d in (3, 8))
    dot = number_sets.separator(60, rng)
    mask = number_sets.canvas([(three, 0, 0), (three, 70, 0), (dot, 130, 60 - dot.shape[0]), (eight, 150, 0)])
    assert read(trained, grainy_png(mask, grain, rng)) == "338"


def test_digits_barely_darker_than_the_paper_are_found_along_their_strokes(trained, clearest):
    """Digits hardly darker than the paper's grain (pencil under a deep shadow), beside one the threshold
    finds: under the lowest threshold that the grain allows, they stand out once averaged along a stroke."""
    digits = [number_sets.scaled(eval_sets.crop(clearest[d]), 60) * dark for d, dark in ((5, 0.3), (2, 0.09),
                                                                                         (7, 0.09))]
    png = grainy_png(number_sets.canvas(in_a_row(digits)), 0.01, np.random.default_rng(0))
    reading = reading_of(png)
    assert reading.marks.threshold == MIN_INK  # the threshold at its floor ...
    assert len(segmentation.groups(reading)) == 1  # ... finds the 5 alone
    assert read(trained, png) == "527"


@pytest.mark.parametrize("light", [0.25, 0.35])
def test_a_digit_whose_light_stroke_the_threshold_loses_is_read_whole(trained, clearest, light):
    """A 7 whose bar's left half is far lighter than the rest (a high-contrast font's hairline, ink photographed
    unevenly): the threshold the bold digits set loses that half, and what is left reads as another digit; a
    second look at a lower threshold holds it."""
    four, seven, two = (number_sets.scaled(eval_sets.crop(clearest[d]), 60) for d in (4, 7, 2))
    seven[:20, :30] *= light
    png = number_png(number_sets.canvas(in_a_row([four, seven, two])))
    reading = reading_of(png)
    assert light < reading.marks.threshold  # the light half is under the threshold
    assert read(trained, png) == "472"


def test_a_broken_ruled_line_below_the_digits_is_no_part_of_them(trained, clearest):
    """Pieces of a faint ruled line a digit's height below share the digits' columns, not their rows."""
    digits = [number_sets.scaled(eval_sets.crop(clearest[d]), 60) for d in (3, 8, 6)]
    placed = in_a_row(digits)
    x = sum(d.shape[1] + 20 for d in digits)
    dash = np.full((3, 24), 0.8, np.float32)
    placed += [(dash, left, 120) for left in range(0, x, 32)]
    png = number_png(number_sets.canvas(placed))
    assert len(segmentation.groups(reading_of(png))) == 3
    assert read(trained, png) == "386"


# 1 6, 0 5 and 1 3 4 were misread before cuts were read from views; 1 9 and 0 5 before the reader of the
# whole mark (EXPERIMENTS.md, "Reading whole numbers").
@pytest.mark.parametrize("digits", [[2, 0], [4, 7], [3, 5, 9], [1, 6], [1, 3, 4], [1, 9], [0, 5]])
def test_touching_digits_are_cut_where_the_model_reads_them(trained, clearest, digits):
    png = number_png(number_sets.touching([clearest[d] for d in digits], np.random.default_rng(3)))
    assert len(segmentation.groups(reading_of(png))) == 1  # one mark: the strokes touch
    assert read(trained, png) == "".join(map(str, digits))


def test_each_digit_carries_its_probabilities(trained, clearest):
    """A digit apart carries the model's reading of its image; a cut piece of touching digits the model's and
    the reader's together: their geometric mean, renormalised."""
    recognise = lambda x: probabilities(trained.model, x)  # noqa: E731
    apart = segmentation.read_number(reading_of(number_png(number_sets.apart([clearest[d] for d in (3, 8)],
                                                                            np.random.default_rng(0)))), recognise)
    assert torch.equal(segmentation.probabilities_of(apart), recognise(segmentation.images_of(apart)))
    reading = reading_of(number_png(number_sets.touching([clearest[d] for d in (2, 0)], np.random.default_rng(3))))
    pair = segmentation.digits_of(reading, recognise)  # one look, at the reading's own marks
    assert len(pair) == 2
    _, places = segmentation.whole_reading(reading.ink, segmentation.groups(reading)[0])
    reader = places[MarkReader.PLACES[1]:MarkReader.PLACES[1] + 2].exp()
    both = (recognise(segmentation.images_of(pair)) * reader).sqrt()
    assert torch.allclose(segmentation.probabilities_of(pair), both / both.sum(1, keepdim=True))


def test_a_lone_digit_is_not_cut(trained, clearest):
    for d in range(10):
        assert read(trained, number_png(clearest[d])) == str(d)


def test_steady_reading_reads_each_image_from_its_views():
    seen = []

    def recognise(x):
        seen.append(x)
        return torch.full((len(x), 10), 0.1)

    images = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    images[0, 0, 14, 8:20] = 255  # a flat bar
    images[1, 0, 10:18, 14] = 255  # an upright one
    top, digit = segmentation.steady_reading(images, recognise)
    views = seen[0].reshape(len(segmentation.VIEWS), 2, 1, 28, 28)
    assert torch.equal(views[0], images)  # the first view is the image as it is
    for (turn, scale, right, down), view in zip(segmentation.VIEWS, views, strict=True):
        ys, xs = torch.nonzero(view[0, 0] > 127, as_tuple=True)
        if right or down:  # moved right (or down) by that share of half the field
            assert float(xs.float().mean()) - 13.5 == pytest.approx(right * 14, abs=0.5)
            assert float(ys.float().mean()) - 14 == pytest.approx(down * 14, abs=0.5)
        if turn:  # turned: the flat bar's ends at different heights
            assert int(ys[xs.argmin()]) != int(ys[xs.argmax()])
        if scale != 1:
            assert int(xs.max() - xs.min()) + 1 == pytest.approx(12 * scale, abs=1.5)
    assert torch.allclose(top, torch.tensor(0.1).log().expand(2)) and digit.tolist() == [0, 0]


def test_the_reader_counts_and_reads_touching_digits_whole(mnist_test):
    """MNIST test digits alone, and touching in pairs and triples as a user's are framed: the reader's
    count, and its digits, from the whole uncut mark."""
    images, labels = mnist_test
    rng = np.random.default_rng(0)
    counted, read = 0, 0
    for k in range(40):
        n = 1 + k % 3
        digits = [int(labels[100 + 3 * k + i]) for i in range(n)]
        masks = [images[100 + 3 * k + i, 0].numpy().astype(np.float32) / 255 for i in range(n)]
        reading = reading_of(number_png(number_sets.touching(masks, rng)))
        count, places = segmentation.whole_reading(reading.ink, torch.stack(segmentation.groups(reading)).any(0))
        first = MarkReader.PLACES[n - 1]
        right_count = int(count.argmax()) + 1 == n
        counted += right_count
        read += right_count and places[first:first + n].argmax(1).tolist() == digits
    assert counted >= 36 and read >= 30  # nine in ten counted, three in four read whole


def test_the_cut_path_crosses_the_least_ink():
    mask = torch.zeros(20, 30, dtype=torch.bool)
    mask[:, 5:12] = True
    mask[:, 16:25] = True
    mask[8:10, 12:16] = True  # a bridge between two blocks, as touching strokes are
    path = segmentation.cut_path(mask, 14, 5)
    assert len(path) == 20 and all(12 <= x <= 15 for x in path.tolist())
    assert int(mask[torch.arange(20), path].sum()) == 2  # only the bridge is crossed


def test_several_says_a_row_of_digits_from_one(clearest):
    rng = np.random.default_rng(0)
    assert segmentation.several(reading_of(number_png(number_sets.apart([clearest[d] for d in (4, 0, 2)], rng))))
    for d in range(10):
        assert not segmentation.several(reading_of(number_png(clearest[d])))
