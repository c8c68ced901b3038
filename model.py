"""MNIST CNN variants. Every model maps (N, 1, 28, 28) to (N, 10) log-probabilities.

Each variant builds one nn.Sequential, `self.net`, so tools (receptive-field walk,
activation hooks, summaries) can read the layers in order. Per-layer comments give
output size and receptive field (RF) as "CxHxW, RF r".

Switch the default by editing the `selected_model` line at the bottom. To add a variant: its class
(with `documented_params`) and its MODELS entry.
"""
import torch.nn as nn
import torch.nn.functional as F


def conv_bn_act(c_in, c_out, kernel=3, padding=1, stride=1, act=nn.ReLU):
    # No conv bias: the BatchNorm that follows has its own shift, so a bias would be redundant.
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out), act(inplace=True)]


class CenterCrop(nn.Module):
    """The centre 24x24 of the 28x28 input. MNIST framed its digits in a 20x20 box centred by mass, so the
    2-pixel frame holds almost none of the ink; every map after it has 0.73x the area, and 24 halves to
    12, 6 and 3 with nothing floored away. It shortens the CPU epoch at no cost in accuracy
    (EXPERIMENTS.md, "The accuracy variants")."""

    def forward(self, x):
        return x[:, :, 2:26, 2:26]


class MnistNet(nn.Module):
    """Base class: subclasses set `self.net`; forward returns log_softmax of its logits.
    `documented_params` is the count the README's models table gives; test_model.py holds every variant to it.

    `features` and `classifier` split `net` as torchvision's models are split, for code written against
    them: the head starts after the nn.Flatten, or, where the flatten comes last (an all-conv model, as
    torchvision's SqueezeNet), at the last conv. Both are views of `net`, which alone holds the layers,
    so state_dict keys stay `net.<i>.*`: the same modules (freezing or hooking a view reaches the model),
    but a layer is replaced by assigning into `net`."""

    net: nn.Sequential
    documented_params: int

    def forward(self, x):
        return F.log_softmax(self.net(x), dim=1)

    def _head_start(self):
        layers = list(self.net)
        flatten = next(i for i, m in enumerate(layers) if isinstance(m, nn.Flatten))
        if flatten < len(layers) - 1:
            return flatten
        return max(i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d))

    @property
    def features(self):
        """The convolutional trunk: every layer of `net` before the head."""
        return self.net[:self._head_start()]

    @property
    def classifier(self):
        """The head, ending in the layer that outputs the 10 classes (the flatten left out, as in torchvision)."""
        return nn.Sequential(*(m for m in self.net[self._head_start():] if not isinstance(m, nn.Flatten)))


# ---------------------------------------------------------------- this project's designs

class FastNet(MnistNet):
    """Default, 19,354 params, built for speed. A stride-2 first conv puts every later layer at
    14x14 or 7x7: BatchNorm and conv passes over 28x28 maps are what dominate a CPU epoch. No
    CenterCrop: it would shorten the epoch, but it cost accuracy on unseen fonts and photos, and this is
    the model that reads users' digits (EXPERIMENTS.md, "The accuracy variants").
    The flattened 3x3 head keeps position information that global pooling would throw away."""

    documented_params = 19_354

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            *conv_bn_act(1, 16, stride=2),  # 16x14x14, RF 3
            *conv_bn_act(16, 16),           # 16x14x14, RF 7
            nn.MaxPool2d(2),                # 16x7x7,   RF 9
            *conv_bn_act(16, 32),           # 32x7x7,   RF 17
            *conv_bn_act(32, 32),           # 32x7x7,   RF 25
            nn.MaxPool2d(2),                # 32x3x3,   RF 29
            nn.Flatten(),
            nn.Linear(32 * 3 * 3, 10),
        )


class WideNet(MnistNet):
    """The most accurate under 25k, 24,658 params: FastNet's plan with a full-resolution first conv,
    two convs at 12x12 and SiLU, for 1.55x its multiply-adds. SiLU helps it and not FastNet, which
    keeps ReLU; the second 12x12 conv is paid for by 28 channels instead of 32 at 6x6 (EXPERIMENTS.md,
    "The accuracy variants")."""

    documented_params = 24_658

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            CenterCrop(),                       # 1x24x24
            *conv_bn_act(1, 16, act=nn.SiLU),   # 16x24x24, RF 3
            nn.MaxPool2d(2),                    # 16x12x12, RF 4
            *conv_bn_act(16, 24, act=nn.SiLU),  # 24x12x12, RF 8
            *conv_bn_act(24, 24, act=nn.SiLU),  # 24x12x12, RF 12
            nn.MaxPool2d(2),                    # 24x6x6,   RF 14
            *conv_bn_act(24, 28, act=nn.SiLU),  # 28x6x6,   RF 22
            *conv_bn_act(28, 28, act=nn.SiLU),  # 28x6x6,   RF 30
            nn.MaxPool2d(2),                    # 28x3x3,   RF 34
            nn.Flatten(),
            nn.Linear(28 * 3 * 3, 10),
        )


class TinyNet(MnistNet):
    """Under 8,000 params (7,986): WideNet's plan at half the width, plus a second full-resolution conv.
    At this size the extra full-resolution layer is worth more than width later on. SiLU and batch 64,
    as measured in EXPERIMENTS.md, "The accuracy variants"."""

    documented_params = 7_986

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            CenterCrop(),                       # 1x24x24
            *conv_bn_act(1, 8, act=nn.SiLU),    # 8x24x24,  RF 3
            *conv_bn_act(8, 8, act=nn.SiLU),    # 8x24x24,  RF 5
            nn.MaxPool2d(2),                    # 8x12x12,  RF 6
            *conv_bn_act(8, 16, act=nn.SiLU),   # 16x12x12, RF 10
            nn.MaxPool2d(2),                    # 16x6x6,   RF 12
            *conv_bn_act(16, 16, act=nn.SiLU),  # 16x6x6,   RF 20
            *conv_bn_act(16, 16, act=nn.SiLU),  # 16x6x6,   RF 28
            nn.MaxPool2d(2),                    # 16x3x3,   RF 32
            nn.Flatten(),
            nn.Linear(16 * 3 * 3, 10),
        )


# ---------------------------------------------------------------- reference architectures
# Faithful to the five reference READMEs in shared/seeds, for comparison.

class RefBaselineNet(MnistNet):
    """Reference 1 (52,138 params): two convs and a 784->64->10 MLP. Over the 25k budget."""

    documented_params = 52_138

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),   # 8x28x28,  RF 3
            nn.MaxPool2d(2),                             # 8x14x14,  RF 4
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),  # 16x14x14, RF 8
            nn.MaxPool2d(2),                             # 16x7x7,   RF 10
            nn.Flatten(),
            nn.Linear(16 * 7 * 7, 64), nn.ReLU(),
            nn.Linear(64, 10),
        )


class RefAllConvNet(MnistNet):
    """Reference 2 (12,412 params): all-conv, ReLU then BN, no padding, 4x4 conv to 1x1.
    The reference's fifth conv keeps its bias (2,320 params in its summary), so this one does too."""

    documented_params = 12_412

    def __init__(self):
        super().__init__()

        def conv_relu_bn(c_in, c_out, kernel=3, bias=False):
            return [nn.Conv2d(c_in, c_out, kernel, bias=bias), nn.ReLU(), nn.BatchNorm2d(c_out)]

        self.net = nn.Sequential(
            *conv_relu_bn(1, 8),               # 8x26x26,  RF 3
            *conv_relu_bn(8, 16),              # 16x24x24, RF 5
            nn.MaxPool2d(2),                   # 16x12x12, RF 6
            *conv_relu_bn(16, 16),             # 16x10x10, RF 10
            *conv_relu_bn(16, 16),             # 16x8x8,   RF 14
            *conv_relu_bn(16, 16, bias=True),  # 16x6x6,   RF 18
            *conv_relu_bn(16, 16),             # 16x4x4,   RF 22
            *conv_relu_bn(16, 10, kernel=1),   # 10x4x4,   RF 22
            nn.Conv2d(10, 10, 4, bias=False),  # 10x1x1,   RF 28
            nn.Flatten(),
        )


class RefFcHeadNet(MnistNet):
    """Reference 3 (24,806 params; its README counts 24,690, leaving out the 116 BN params):
    conv 6 and 12 filters, then 588->40->10."""

    documented_params = 24_806

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),    # 6x28x28,  RF 3
            nn.MaxPool2d(2),                                                 # 6x14x14,  RF 4
            nn.Conv2d(6, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),  # 12x14x14, RF 8
            nn.MaxPool2d(2),                                                 # 12x7x7,   RF 10
            nn.Flatten(),
            nn.Linear(12 * 7 * 7, 40), nn.BatchNorm1d(40), nn.ReLU(),
            nn.Linear(40, 10),
        )


class RefOneByOneNet(MnistNet):
    """Reference 4 (8,954 params; its README says ~8,938, counting 96 BN params where there
    are 112): a 1x1 squeeze between 3x3 convs, FC 512->10, BN after each conv."""

    documented_params = 8_954

    def __init__(self):
        super().__init__()

        def conv_bn_relu_biased(c_in, c_out, kernel=3):
            return [nn.Conv2d(c_in, c_out, kernel), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.net = nn.Sequential(
            *conv_bn_relu_biased(1, 8),            # 8x26x26,  RF 3
            *conv_bn_relu_biased(8, 16),           # 16x24x24, RF 5
            nn.MaxPool2d(2),                       # 16x12x12, RF 6
            *conv_bn_relu_biased(16, 8, kernel=1), # 8x12x12,  RF 6
            *conv_bn_relu_biased(8, 16),           # 16x10x10, RF 10
            *conv_bn_relu_biased(16, 8),           # 8x8x8,    RF 14
            nn.Flatten(),
            nn.Linear(8 * 8 * 8, 10),
        )


class RefDropoutNet(MnistNet):
    """Reference 5 (8,618 params): three conv blocks (8, 16, 16 filters, BN, maxpool each),
    dropout 0.25, FC with 32 hidden units. Its README says ~15,000; the layers it describes
    (3x3, padding 1, 2x2 pools) come to 8,618."""

    documented_params = 8_618

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),    # 8x28x28,  RF 3
            nn.MaxPool2d(2),                                                 # 8x14x14,  RF 4
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),  # 16x14x14, RF 8
            nn.MaxPool2d(2),                                                 # 16x7x7,   RF 10
            nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), # 16x7x7,   RF 18
            nn.MaxPool2d(2),                                                 # 16x3x3,   RF 22
            nn.Flatten(),
            nn.Dropout(0.25),  # after the flatten, so it opens the classifier as in torchvision's AlexNet
            nn.Linear(16 * 3 * 3, 32), nn.ReLU(),
            nn.Linear(32, 10),
        )


class RefGapNet(MnistNet):
    """The reference that reduces the map to 1x1 (receptive field 28 >= image) before one FC."""

    documented_params = 13_058

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            *conv_bn_act(1, 8, padding=0),              # 8x26x26,  RF 3
            *conv_bn_act(8, 16, padding=0),             # 16x24x24, RF 5
            nn.MaxPool2d(2),                            # 16x12x12, RF 6
            *conv_bn_act(16, 16, padding=0),            # 16x10x10, RF 10
            *conv_bn_act(16, 16, padding=0),            # 16x8x8,   RF 14
            *conv_bn_act(16, 16, padding=0),            # 16x6x6,   RF 18
            *conv_bn_act(16, 16, padding=0),            # 16x4x4,   RF 22
            nn.MaxPool2d(2),                            # 16x2x2,   RF 24
            *conv_bn_act(16, 32, kernel=2, padding=0),  # 32x1x1,   RF 28
            nn.Flatten(),
            nn.Linear(32, 10),
        )


class MarkReader(nn.Module):
    """How many digits a mark of touching digits holds (one to three) and which, read as a whole, as
    Goodfellow et al. read house numbers, but each place's digit read for each count: segmentation.py
    weighs each cut of such a mark by it (train_reader.py trains it). In: (N, 1, 28, 80) floats 0-1
    (imageops.frame_wide). Out: log-probabilities of one, two and three digits (N, 3), and of the digit in
    each place of each count (N, 6, 10): row 0 for one digit, rows 1-2 for two, rows 3-5 for three
    (PLACES). Not a variant: it reads no lone digit's image."""

    PLACES = (0, 1, 3)  # the row each count's first place is read in

    def __init__(self, channels=32):
        super().__init__()
        c = channels
        self.conv1, self.bn1 = nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c)
        self.conv3, self.bn3 = nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c)
        self.head = nn.Linear(2 * c * 4 * 10, 3 + 6 * 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)   # 14x40
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)   # 7x20
        x = F.max_pool2d(F.relu(self.bn3(self.conv3(x))), 2, ceil_mode=True)  # 4x10
        z = self.head(F.dropout(x.flatten(1), 0.2, self.training))
        return F.log_softmax(z[:, :3], 1), F.log_softmax(z[:, 3:].reshape(-1, 6, 10), 2)


MODELS = {
    "fastnet": FastNet,
    "widenet": WideNet,
    "tinynet": TinyNet,
    "ref_baseline_52k": RefBaselineNet,
    "ref_allconv_12k": RefAllConvNet,
    "ref_fchead_25k": RefFcHeadNet,
    "ref_onebyone_9k": RefOneByOneNet,
    "ref_dropout_9k": RefDropoutNet,
    "ref_gap": RefGapNet,
}


def build_model(name):
    """A fresh instance of the variant registered under `name`."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name]()


def model_name(model):
    """The MODELS key of a model instance's class."""
    return next(name for name, cls in MODELS.items() if type(model) is cls)


def count_params(model):
    return sum(p.numel() for p in model.parameters())


# The default variant: edit this one line to switch (e.g. `selected_model = TinyNet()`).
selected_model = FastNet()
MNISTModel = type(selected_model)  # the class name the reference repos' scripts and tests import
