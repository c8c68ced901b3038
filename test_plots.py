"""plots.py: every figure is a real PNG with what it says it holds."""
import torch

import plots
import train

PNG = b"\x89PNG\r\n\x1a\n"


def test_augmented_samples_written(mnist_train, tmp_path):
    images, labels = train.sample_batch(*mnist_train, train.recipe("fastnet"))
    plots.save_augmented_samples(images, labels, str(tmp_path))
    files = sorted(p.name for p in (tmp_path / "augmented_samples").iterdir())
    assert "augmented_grid.png" in files
    samples = [f for f in files if f.startswith("sample_")]
    assert len(samples) == plots.N_SAMPLE_PNGS
    assert samples[0] == f"sample_00_label{int(mnist_train[1][0])}.png"
    assert all((tmp_path / "augmented_samples" / f).read_bytes()[:8] == PNG for f in files)


def test_misclassified_grid(mnist_test, tmp_path):
    images, labels = mnist_test[0][:64], mnist_test[1][:64]
    preds = labels.clone()
    preds[[3, 9]] = (labels[[3, 9]] + 1) % 10
    plots.save_misclassified(images, labels, preds, tmp_path / "wrong.png")
    assert (tmp_path / "wrong.png").read_bytes()[:8] == PNG


def test_training_curves_and_confusion_matrix(tmp_path):
    history = {"loss": [2.0 - i / 100 for i in range(100)], "acc": [i / 100 for i in range(100)],
               "lr": [0.01] * 100}
    plots.save_training_curves(history, tmp_path / "curves.png")
    plots.save_confusion_matrix(torch.eye(10, dtype=torch.long) * 100, 100.0, tmp_path / "cm.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG and (tmp_path / "cm.png").read_bytes()[:8] == PNG


def test_benchmark_plot(tmp_path):
    rows = [{"name": "fastnet", "params": 19_354, "epoch_s": 5.0, "test_acc_mean": 99.1},
            {"name": "ref_gap", "params": 13_058, "epoch_s": 9.0, "test_acc_mean": 99.0}]
    plots.save_benchmark_plot(rows, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:8] == PNG
