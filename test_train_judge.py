"""train_judge.py: the pieces of cut touching digits labelled as a whole digit or not one, and a judge
trained on them that segmentation.py loads."""
import numpy as np
import pytest
import torch

import segmentation
import train_judge


def test_pieces_are_labelled_with_their_digit_or_as_not_one_digit(mnist_train):
    images, labels = mnist_train
    seven, two = (images[int((labels == d).nonzero()[0])][0].numpy().astype(np.float32) / 255 for d in (7, 2))
    found, kinds = train_judge.pieces_of([seven, two], [7, 2], np.random.default_rng(0))
    assert found and all(f.shape == (1, 28, 28) and f.dtype == torch.uint8 for f in found)
    assert kinds[0] == 10  # the uncut mark: two digits
    assert set(kinds) == {7, 2, 10}  # some cuts part them right; most pieces are no whole digit
    assert kinds.count(10) > kinds.count(7) + kinds.count(2)


def test_bad_numbers_is_one_line_and_writes_nothing(in_process, one_line_error, tmp_path):
    out = tmp_path / "judge.pth"
    one_line_error(in_process(train_judge.main, ["--numbers", "0", "--out", out]), "--numbers must be between")
    assert not out.exists()


@pytest.mark.slow
def test_a_short_run_writes_a_judge_segmentation_loads(script, tmp_path, data_dir, monkeypatch):
    out = tmp_path / "judge.pth"
    result = script("train_judge.py", "--numbers", "3", "--epochs", "1", "--out", out, "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    assert f"saved {out}" in result.stdout
    monkeypatch.setattr(segmentation, "JUDGE", str(out))
    segmentation.judge.cache_clear()
    try:
        fit = segmentation.one_digit(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
        assert fit.shape == (2,) and (fit <= 0).all()
    finally:
        segmentation.judge.cache_clear()  # the next caller loads the committed judge again
