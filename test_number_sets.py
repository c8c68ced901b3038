"""number_sets.py: numbers written apart and touching as described, labelled by their file names, written
reproducibly and scored."""
import json
import os

import numpy as np
import pytest

import cli
import number_sets
import predict


def stroke(height=28, width=12):
    mask = np.zeros((height, width), np.float32)
    mask[2:-2, 4:8] = 1
    return mask


def test_digits_written_apart_leave_a_gap_between_them():
    rng = np.random.default_rng(0)
    for _ in range(20):
        line = number_sets.apart([stroke(), stroke(), stroke()], rng)
        inked = (line > 0.3).any(0)
        starts = inked & ~np.concatenate([[False], inked[:-1]])
        assert starts.sum() >= 3  # three strokes (and maybe a separator), each clear of the next


def test_a_photos_number_is_drawn_finer_in_the_same_layout():
    masks = [stroke(), stroke(width=20), stroke()]
    plain = number_sets.apart_placed(masks, np.random.default_rng(3))
    fine = number_sets.apart_placed(masks, np.random.default_rng(3), scale=4)
    assert len(fine) == len(plain)
    for (m, left, top), (m4, left4, top4) in zip(plain, fine, strict=True):
        assert abs(m4.shape[0] - 4 * m.shape[0]) <= 4 and abs(left4 - 4 * left) <= 12 and abs(top4 - 4 * top) <= 12


def test_touching_digits_share_ink():
    from scipy import ndimage

    line = number_sets.touching([stroke(width=30), stroke(width=30)], np.random.default_rng(0))
    labels, n = ndimage.label(line > 0.4)
    assert n == 1 and line.shape[1] < 60  # one mark: they overlap where they meet


@pytest.mark.slow
def test_sets_are_reproducible_and_labelled_by_file_name(tmp_path, data_dir):
    for out in ("a", "b"):
        counts = number_sets.write_sets(str(tmp_path / out), 0, 2, data_dir, half="dev")
        assert set(counts) <= set(number_sets.SETS) and {"mnist", "fonts", "photo", "touching"} <= set(counts)
    for name in counts:
        files = sorted(os.listdir(tmp_path / "a" / name))
        assert files == sorted(os.listdir(tmp_path / "b" / name)) and len(files) == 2
        for f in files:
            assert (tmp_path / "a" / name / f).read_bytes() == (tmp_path / "b" / name / f).read_bytes()
        items = predict.numbered_images(str(tmp_path / "a" / name))[0]
        lengths = {len(label) for _, label in items}
        assert len(items) == 2 and lengths <= ({2, 3} if name == "touching" else set(range(3, 8)))


def test_flags_that_do_not_go_together(in_process, one_line_error, tmp_path):
    one_line_error(in_process(number_sets.main, []), "give --out DIR")
    one_line_error(in_process(number_sets.main, ["--out", tmp_path / "x", "--json", "s.json"]), "give --checkpoint")
    one_line_error(in_process(number_sets.main, ["--score", tmp_path]), "give --checkpoint")
    one_line_error(in_process(number_sets.main, ["--out", tmp_path / "x", "--seed", "-1"]), "--seed must be between")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    one_line_error(in_process(number_sets.main, ["--out", tmp_path / "full"]), "is not empty")


def test_the_readme_table_is_made_from_the_json():
    scores = {"sets": [{"name": "mnist", "numbers": 150, "digits": 746, "whole": 93.33, "per_digit": 98.66}],
              "half": "test"}
    table = number_sets.markdown(scores)
    assert "| `mnist` |" in table and "| 150 (746 digits) | 93.33% | 98.66% |" in table
    assert table.endswith("The test half of every set (`--half test`).\n")


@pytest.mark.slow
def test_written_and_scored_by_the_script(trained, tmp_path, script, data_dir):
    out, scores = tmp_path / "sets", tmp_path / "scores.json"
    result = script("number_sets.py", "--out", out, "--numbers", "6", "--checkpoint", trained.pth, "--json", scores,
                    "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    written = json.loads(scores.read_text())
    assert [row["name"] for row in written["sets"]] == [n for n in number_sets.SETS if (out / n).is_dir()]
    for row in written["sets"]:
        assert row["numbers"] == 6 and 0 <= row["whole"] <= 100 and 0 <= row["per_digit"] <= 100
        assert f"{row['name']:12s}" in result.stdout
    table = script("number_sets.py", "--markdown", scores)
    assert table.returncode == 0 and table.stdout == number_sets.markdown(cli.read_json(str(scores), "--markdown"))
