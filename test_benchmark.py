"""benchmark.py: what it counts, that a quick run reports every field, and its one-line errors.
Speed itself is measured by benchmark.py, never asserted here."""
import json

import pytest
import torch

import benchmark
import data
import train
from model import build_model


def test_benchmark_macs_count():
    # conv 1->16 3x3 s2 on 14x14 + 16->16 at 14x14 + 16->32 and 32->32 at 7x7 + FC 288->10
    expected = 196 * 16 * 9 + 196 * 16 * 144 + 49 * 32 * 144 + 49 * 32 * 288 + 2880
    assert benchmark.macs_per_image(build_model("fastnet")) == expected


@pytest.mark.slow
def test_benchmark_quick_runs(tmp_path, data_dir, script):
    out = tmp_path / "bench.json"
    # fastnet, the quickest own variant to train, under its own recipe and the lean one
    result = script("benchmark.py", "--quick", "--models", "fastnet,fastnet:lean", "--json", out,
                    "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    own, lean = report["variants"]
    assert (own["name"], lean["name"]) == ("fastnet", "fastnet:lean") and own["params"] == lean["params"] == 19_354
    assert set(own) == {"name", "params", "macs", "batch_size", "lr", "steps_per_epoch", "images_per_s", "epoch_s",
                        "train_acc_mean", "test_acc_mean", "test_acc_min"}
    for row, config in ((own, train.recipe("fastnet")), (lean, train.recipe("fastnet", "lean"))):
        assert (row["batch_size"], row["lr"]) == (config.batch_size, config.lr)
        images = 60_000 + data.printed_count(config.printed)  # MNIST's and the printed digits
        assert row["steps_per_epoch"] == -(-images // config.batch_size)
        assert row["images_per_s"] == pytest.approx(images / row["epoch_s"], rel=0.01)
    assert {"epoch_s", "wall_s", "test_acc"} <= set(report["reference"])
    assert report["speedup_vs_reference"] > 0 and report["device"] == "cpu" and report["torch"] == torch.__version__
    assert "speed-up of train.py over the reference" in result.stdout


def test_benchmark_rejects_unknown_model(in_process, one_line_error):
    one_line_error(in_process(benchmark.main, ["--models", "fastnet,lenet"]), "unknown model 'lenet'")
    one_line_error(in_process(benchmark.main, ["--models", "fastnet:fast"]), "unknown recipe in 'fastnet:fast'")


@pytest.mark.parametrize("args, needle", [
    (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["--batch-size", "-5"], "--batch-size must be a positive integer, got -5"),
    (["--lr", "-1"], "--lr must be a number in (0, 10], got -1.0"),
    (["--models", ""], "--models needs at least one name"),
    (["--models", " , "], "--models needs at least one name"),
    (["--seeds", "0"], "--seeds must be between 1 and 100"),
    (["--json", "/nonexistent/folder/bench.json"], "cannot write --json '/nonexistent/folder/bench.json'"),
    (["--plot", "."], "--plot '.' is a folder"),
    (["--batch-size", "70000"], "larger than the training set"),
    (["--set", "nope=1"], "--set 'nope=1': no recipe field 'nope'"),
    (["--set", "lr=fast"], "--set 'lr=fast': could not convert"),
    (["--set", "augment=rotate,spin"], "unknown augmentation 'spin'"),
    (["--holdout", "-1"], "--holdout must be between 0 and 50,000"),
])
def test_benchmark_rejects_bad_flags_before_training(args, needle, data_dir, in_process, one_line_error):
    one_line_error(in_process(benchmark.main, [*args, "--data-dir", data_dir, "--no-end-to-end"]), needle)


def test_markdown_table_from_a_result(tmp_path, in_process):
    """--markdown prints the README's table from a --json file: this project's rows, the reference, the speed-up."""
    row = {"params": 19_354, "macs": 1, "batch_size": 128, "lr": 0.02, "steps_per_epoch": 488, "images_per_s": 1,
           "epoch_s": 8.116, "train_acc_mean": 95.705, "test_acc_mean": 99.126, "test_acc_min": 99.06}
    result = {"variants": [dict(row, name="fastnet"), dict(row, name="ref_gap"), dict(row, name="fastnet:lean")],
              "seeds": 5, "date": "2026-11-29", "torch": "2.14.1", "device": "cpu", "device_name": "x86_64",
              "cpu_threads": 2, "reference": {"epoch_s": 27.657, "wall_s": 33.547, "exit_s": 34.471, "test_acc": 97.65},
              "train_py": {"wall_s": 9.955, "exit_s": 11.775, "test_acc": 99.14}}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(result), encoding="utf-8")
    out = in_process(benchmark.main, ["--markdown", path]).stdout
    lines = out.splitlines()
    assert lines[2] == "| fastnet | 19,354 | 128 | 488 | 8.12 | 95.70 | 99.13 | 99.06 |"
    assert lines[3].startswith("| fastnet, `--recipe lean` | 19,354 | 128 |")  # the row's own batch size
    assert "ref_gap" not in out and lines[4].startswith("| reference pipeline") and "| 27.66 |" in lines[4]
    assert "**3.37x faster** (2.93x to process exit)" in out and "5 seeds per row, 2026-11-29, torch 2.14.1" in out
    only = in_process(benchmark.main, ["--markdown", path, "--models", "ref_gap"]).stdout
    assert "| ref_gap |" in only and "fastnet" not in only and "reference pipeline" not in only


def test_markdown_needs_a_json_object(tmp_path, in_process, one_line_error):
    bad = tmp_path / "bench.json"
    bad.write_text("[1, 2]", encoding="utf-8")
    one_line_error(in_process(benchmark.main, ["--markdown", bad]), "is not a JSON object")
    one_line_error(in_process(benchmark.main, ["--markdown", tmp_path / "none.json"]), "not found")


def test_set_and_holdout_reach_the_run(monkeypatch, part_of_mnist, data_dir, tmp_path, in_process):
    """--set changes the recipe each variant trains with, and --holdout reports accuracy on held-out images."""
    part_of_mnist(3072, 2000)
    used = []
    real_train = train.train
    monkeypatch.setattr(train, "train", lambda model, images, labels, config, *a, **k: (
        used.append((len(images), config)), real_train(model, images, labels, config, *a, **k))[1])
    out = tmp_path / "bench.json"
    result = in_process(benchmark.main, ["--models", "tinynet", "--seeds", "1", "--no-end-to-end", "--holdout", "1024",
                                         "--batch-size", "1024", "--set", "optimizer.beta2=0.99", "--set",
                                         "printed=none", "--set", "augment=rotate", "--json", out,
                                         "--data-dir", data_dir])
    assert result.returncode == 0, result.stderr
    (n, config), = used
    assert n == 3072 - 1024 and config.optimizer.beta2 == 0.99 and config.printed is None
    assert config.augment == ("rotate",) and " val " in result.stdout
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["holdout"] == 1024 and 0 <= report["variants"][0]["val_acc_mean"] <= 100
    assert report["set"] == ["optimizer.beta2=0.99", "printed=none", "augment=rotate"]


@pytest.mark.slow
def test_the_number_photo_it_times_is_read_whole(trained, data_dir, capsys):
    """The 12-megapixel JPEG of a six-digit number that benchmark.py times: its six digits read back."""
    seconds = benchmark.time_number(trained.pth, data_dir, repeats=1)
    line = capsys.readouterr().out.strip()
    read, written = line.split("; read ")[1].split(", written ")
    assert seconds > 0 and len(written) == 6 and read == written, line
