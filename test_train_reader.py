"""train_reader.py: marks of one to three touching digits with their labels, and a reader trained on them
that segmentation.py loads."""
import numpy as np
import pytest
import torch

import segmentation
import train_reader


def test_marks_hold_their_digits_framed_for_the_reader(mnist_train):
    images, labels = mnist_train
    masks = images[:2000, 0].numpy().astype(np.float32) / 255
    found, counts, digits = train_reader.marks(60, masks, labels[:2000].numpy(), np.random.default_rng(0))
    assert found.shape == (60, 1, 28, 80) and found.dtype == torch.uint8
    assert set(counts.tolist()) == {0, 1, 2} and digits.shape == (60, 3)
    assert all((digits[k, int(c) + 1:] == 0).all() for k, c in enumerate(counts))
    widths = torch.tensor([int(f[0].any(0).sum()) for f in found]).float()
    tall = torch.tensor([int(f[0].any(1).sum()) for f in found])
    assert (tall <= 24).all() and (tall >= 12).all()  # 20 pixels tall, as MNIST's digits, and a margin
    # every digit pushed alongside widens the mark, less than a whole digit's width as their strokes overlap
    mean = [float(widths[counts == k].mean()) for k in range(3)]
    assert mean[0] < 24 and 5 < mean[1] - mean[0] < 20 and 5 < mean[2] - mean[1] < 20


def test_bad_numbers_is_one_line_and_writes_nothing(in_process, one_line_error, tmp_path):
    out = tmp_path / "reader.pth"
    one_line_error(in_process(train_reader.main, ["--numbers", "0", "--out", out]), "--numbers must be between")
    assert not out.exists()


@pytest.mark.slow
def test_a_short_run_writes_a_reader_segmentation_loads(script, tmp_path, data_dir, monkeypatch):
    out = tmp_path / "reader.pth"
    result = script("train_reader.py", "--numbers", "256", "--epochs", "1", "--out", out, "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    assert f"saved {out}" in result.stdout
    monkeypatch.setattr(segmentation, "READER", str(out))
    segmentation.reader.cache_clear()
    try:
        mask = torch.zeros(30, 60, dtype=torch.bool)
        mask[5:25, 10:50] = True
        count, places = segmentation.whole_reading(mask.float(), mask)
        assert count.shape == (3,) and places.shape == (6, 10)
        assert torch.allclose(count.exp().sum(), torch.tensor(1.0), atol=1e-5)
    finally:
        segmentation.reader.cache_clear()  # the next caller loads the committed reader again
