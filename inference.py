"""Running a model on digits: uint8 images in, probabilities out. The one inference path, used by
train.py's evaluation, predict.py, export.py's checks and the tests."""
import torch

from data import to_input

# A top probability under this marks an answer as low confidence: a letter, a shape or a smudge
# rather than a digit. Calibrated with eval_sets.py on the default model: it catches most letters,
# shapes and blank pages while flagging about 3% of MNIST's own digits (EXPERIMENTS.md, "The
# low-confidence threshold").
LOW_CONFIDENCE = 0.6


@torch.inference_mode()
def probabilities(model, images_uint8, batch_size=1000):
    """(N, 10) class probabilities for (N, 1, 28, 28) uint8 digits, in eval mode, in batches."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(to_input(images_uint8[i:i + batch_size].to(device))).exp()
                      for i in range(0, len(images_uint8), batch_size)])


def predicted_classes(model, images_uint8):
    """The most probable digit of each image."""
    return probabilities(model, images_uint8).argmax(1)


def low_confidence(probs):
    """Whether a digit's probabilities (10,) are too flat to trust."""
    return float(probs.max()) < LOW_CONFIDENCE
