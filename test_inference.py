"""inference.py: the one path from uint8 digits to probabilities."""
import torch

from data import to_input
from inference import predicted_classes, probabilities


def test_probabilities_are_the_models_in_eval_mode(trained, mnist_test):
    images = mnist_test[0][:300]
    trained.model.train()
    probs = probabilities(trained.model, images, batch_size=128)  # batches of 128, 128 and 44
    assert not trained.model.training
    with torch.no_grad():
        expected = trained.model(to_input(images)).exp()
    assert probs.shape == (300, 10)
    assert torch.allclose(probs, expected, atol=1e-6)
    assert torch.allclose(probs.sum(1), torch.ones(300), atol=1e-5)


def test_predicted_classes(trained, mnist_test):
    images, labels = mnist_test[0][:500], mnist_test[1][:500]
    preds = predicted_classes(trained.model, images)
    assert torch.equal(preds, probabilities(trained.model, images).argmax(1))
    assert (preds == labels).float().mean() > 0.97
