"""model.py: the networks' architecture and properties, on real MNIST and a really trained model.

Every check runs over every variant in MODELS; a new variant is checked without editing this file.
Reference architectures are exempt from a design rule only where they are named below, with why.
"""
import copy
import math
from itertools import pairwise

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from data import affine_grid_28, normalize, to_input
from inference import probabilities
from model import MODELS, CenterCrop, MarkReader, MNISTModel, build_model, count_params, model_name, selected_model

BUDGET, TINY_BUDGET = 25_000, 8_000
OVER_BUDGET = {"ref_baseline_52k"}  # the 52k reference baseline, kept for comparison
# References 3, 4 and 5 keep the conv bias before their BatchNorm, as their READMEs' layers and counts have it.
REFERENCE_KEEPS_CONV_BIAS = {"ref_fchead_25k", "ref_onebyone_9k", "ref_dropout_9k"}


def is_own(name):
    """This project's designs; the ref_* variants reproduce the reference repos' architectures."""
    return not name.startswith("ref_")


def budget_params():
    """Every variant; the over-budget reference is marked, and must stay over (strict xfail)."""
    return [pytest.param(name, marks=[pytest.mark.over_budget,
                                      pytest.mark.xfail(strict=True, reason="52k reference baseline, over budget")])
            if name in OVER_BUDGET else name for name in MODELS]


# ---------------------------------------------------------------- architecture

@pytest.mark.parametrize("name", MODELS)
def test_output_is_log_probabilities(name):
    model = build_model(name).eval()
    out = model(torch.randn(7, 1, 28, 28))
    assert out.shape == (7, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(7), atol=1e-5)
    assert (out <= 0).all()


def test_mark_reader_gives_a_count_and_each_places_digit_and_is_no_variant():
    count, places = MarkReader().eval()(torch.rand(5, 1, 28, 80))
    assert count.shape == (5, 3)  # one, two or three digits
    assert places.shape == (5, 6, 10)  # each place's digit for each count: 1 + 2 + 3 places
    assert MarkReader.PLACES == (0, 1, 3)
    assert torch.allclose(count.exp().sum(1), torch.ones(5), atol=1e-5)
    assert torch.allclose(places.exp().sum(2), torch.ones(5, 6), atol=1e-5)
    assert MarkReader not in MODELS.values()


@pytest.mark.parametrize("name", MODELS)
def test_param_count_matches_documented(name):
    assert count_params(build_model(name)) == MODELS[name].documented_params


def test_reference_readme_counts_without_batchnorm():
    """References 3 and 4 listed their conv/FC parameters without the BN ones; those sums hold."""
    def without_bn(name):
        return sum(p.numel() for m in build_model(name).modules()
                   if isinstance(m, (nn.Conv2d, nn.Linear)) for p in m.parameters(recurse=False))
    assert without_bn("ref_fchead_25k") == 24_690
    assert without_bn("ref_onebyone_9k") == 8_842  # 80 + 1,168 + 136 + 1,168 + 1,160 + 5,130, as listed


@pytest.mark.parametrize("name", budget_params())
def test_param_budget(name):
    assert count_params(build_model(name)) < BUDGET


def test_a_variant_under_the_tiny_budget():
    assert min(count_params(build_model(n)) for n in MODELS if is_own(n)) < TINY_BUDGET


def test_selected_model_and_registry():
    assert isinstance(selected_model, MNISTModel)
    assert MODELS[model_name(selected_model)] is MNISTModel
    assert isinstance(build_model("tinynet"), MODELS["tinynet"])
    assert build_model("fastnet") is not build_model("fastnet")
    with pytest.raises(ValueError, match="choose one of: fastnet, widenet"):
        build_model("resnet50")


# ---------------------------------------------------------------- gradient flow

@pytest.mark.parametrize("name", ["trained"] + list(MODELS))
def test_gradient_flow(name, trained, mnist_test):
    model = copy.deepcopy(trained.model) if name == "trained" else build_model(name)
    model.train()
    images, labels = mnist_test
    loss = F.nll_loss(model(to_input(images[:4])), labels[:4])
    loss.backward()
    for pname, p in model.named_parameters():
        g = p.grad
        print(f"{pname:24s} mean {g.mean():+.2e} std {g.std() if g.numel() > 1 else 0:.2e} "
              f"min {g.min():+.2e} max {g.max():+.2e}")
        assert torch.isfinite(g).all(), pname
        assert g.abs().sum() > 0, f"{pname}: gradient is all zeros"


# ---------------------------------------------------------------- batches

@pytest.mark.parametrize("batch", [1, 16, 32, 64, 128])
def test_batch_sizes(batch, trained, mnist_test):
    with torch.no_grad():
        out = trained.model(to_input(mnist_test[0][:batch]))
    assert out.shape == (batch, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(batch), atol=1e-5)


@pytest.mark.parametrize("name", ["trained"] + list(MODELS))
def test_batch_invariance(name, trained, mnist_test):
    model = (trained.model if name == "trained" else build_model(name)).eval()
    x = to_input(mnist_test[0][:64])
    with torch.no_grad():
        batched = model(x)
        alone = torch.cat([model(x[i:i + 1]) for i in (0, 17, 63)])
    assert torch.allclose(alone, batched[[0, 17, 63]], atol=1e-4)


# ---------------------------------------------------------------- robustness

def shift(x, dx, dy):
    """Move images dx pixels right and dy down, filling with black."""
    padded = F.pad(x, (2, 2, 2, 2))
    return padded[..., 2 - dy:30 - dy, 2 - dx:30 - dx]


def rotate(x, degrees):
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), math.sin(a), 0.0], [-math.sin(a), math.cos(a), 0.0]]).expand(len(x), 2, 3)
    return F.grid_sample(x, affine_grid_28(theta), align_corners=False)


def gaussian(x, sigma):
    g = torch.Generator().manual_seed(0)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


PERTURBATIONS = {
    "noise_0.1": lambda x: gaussian(x, 0.1),
    "brightness_x1.2": lambda x: (x * 1.2).clamp(0, 1),
    "contrast_x0.8": lambda x: ((x - x.mean((2, 3), keepdim=True)) * 0.8 + x.mean((2, 3), keepdim=True)).clamp(0, 1),
    "rotate_+5": lambda x: rotate(x, 5),
    "rotate_-5": lambda x: rotate(x, -5),
    "shift_right_2": lambda x: shift(x, 2, 0),
    "shift_left_2": lambda x: shift(x, -2, 0),
    "shift_down_2": lambda x: shift(x, 0, 2),
    "shift_up_2": lambda x: shift(x, 0, -2),
}


@torch.no_grad()
def predictions(model, x01):
    """Predicted classes for [0,1] float images (perturbed ones are no longer uint8)."""
    return model.eval()(normalize(x01)).argmax(1)


@pytest.mark.parametrize("perturbation", PERTURBATIONS)
def test_prediction_stable_under_perturbation(perturbation, trained, mnist_test):
    x = mnist_test[0][:1000].float() / 255
    same = (predictions(trained.model, x) == predictions(trained.model, PERTURBATIONS[perturbation](x)))
    rate = 100 * same.float().mean().item()
    print(f"{perturbation}: prediction unchanged for {rate:.1f}% of 1,000 test images")
    assert rate >= 95.0


def test_accuracy_under_heavy_noise(trained, mnist_test):
    images, labels = mnist_test[0][:1000], mnist_test[1][:1000]
    acc = 100 * (predictions(trained.model, gaussian(images.float() / 255, 0.3)) == labels).float().mean().item()
    print(f"accuracy under sigma 0.3 noise: {acc:.1f}%")
    assert acc >= 80.0


# ---------------------------------------------------------------- activations

@pytest.mark.parametrize("name", ["trained"] + list(MODELS))
def test_activations_finite_and_bounded(name, trained, mnist_test):
    model = (trained.model if name == "trained" else build_model(name)).eval()
    peaks = {}

    def keep(key):
        return lambda mod, inp, out: peaks.__setitem__(key, out)

    hooks = [m.register_forward_hook(keep(f"{i}:{type(m).__name__}")) for i, m in enumerate(model.net)]
    with torch.no_grad():
        model(to_input(mnist_test[0][:256]))
    for h in hooks:
        h.remove()
    assert len(peaks) == len(model.net)
    for key, out in peaks.items():
        assert torch.isfinite(out).all(), key
        assert out.abs().max() < 1e3, f"{key}: activations up to {out.abs().max():.3g}"


# ---------------------------------------------------------------- layer properties

def layers(name):
    return list(build_model(name).net)


def uses_batchnorm(name):
    return any(isinstance(m, nn.BatchNorm2d) for m in layers(name))


@pytest.mark.parametrize("name", [n for n in MODELS if uses_batchnorm(n)])
def test_batchnorm_follows_each_hidden_conv(name):
    """A variant that uses BatchNorm at all puts it after every hidden convolution."""
    mods = layers(name)
    convs = [i for i, m in enumerate(mods) if isinstance(m, nn.Conv2d)]
    final_logits_conv = convs[-1] if not any(isinstance(m, nn.Linear) for m in mods) else None
    for i in convs:
        if i == final_logits_conv:
            continue
        following = []
        for m in mods[i + 1:]:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                break
            following.append(m)
        assert any(isinstance(m, nn.BatchNorm2d) for m in following), f"conv at {i} has no BatchNorm after it"


@pytest.mark.parametrize("name", [n for n in MODELS if n not in REFERENCE_KEEPS_CONV_BIAS])
def test_no_bias_before_batchnorm(name):
    """The BatchNorm right after a conv has its own shift, so the conv's bias would be redundant."""
    mods = layers(name)
    pairs = [(a, b) for a, b in pairwise(mods) if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d)]
    assert all(a.bias is None for a, _ in pairs)


@pytest.mark.parametrize("name", sorted(REFERENCE_KEEPS_CONV_BIAS))
def test_the_exempt_references_really_keep_their_bias(name):
    mods = layers(name)
    assert any(isinstance(a, nn.Conv2d) and a.bias is not None and isinstance(b, nn.BatchNorm2d)
               for a, b in pairwise(mods))


@pytest.mark.parametrize("name", MODELS)
def test_last_layer_has_ten_outputs(name):
    last = [m for m in layers(name) if isinstance(m, (nn.Conv2d, nn.Linear))][-1]
    assert (last.out_features if isinstance(last, nn.Linear) else last.out_channels) == 10


def receptive_field(mods):
    """Receptive field of the last conv/pool feature map, walking the layers in order."""
    rf, jump = 1, 1
    for m in mods:
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            s = m.stride if isinstance(m.stride, int) else m.stride[0]
            rf, jump = rf + (k - 1) * jump, jump * s
    return rf


@pytest.mark.parametrize("name", MODELS)
def test_features_and_classifier_compose_as_torchvision_s(name, mnist_test):
    """`features` then `classifier`, flattened between (or after, for an all-conv head, as torchvision's
    SqueezeNet) reproduce forward's logits; the classifier ends in the layer with 10 outputs; and the
    split adds no state_dict key, so every checkpoint written before still loads."""
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = to_input(mnist_test[0][:32])
    with torch.no_grad():
        trunk = model.features(x)
        assert trunk.dim() == 4  # a feature map, before any flatten
        head = model.classifier
        fc_head = isinstance(next(m for m in head if not isinstance(m, nn.Dropout)), nn.Linear)
        logits = head(torch.flatten(trunk, 1)) if fc_head else torch.flatten(head(trunk), 1)
        assert torch.allclose(F.log_softmax(logits, 1), model(x), atol=1e-6)
    last = [m for m in head if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    assert getattr(last, "out_features", getattr(last, "out_channels", None)) == 10
    assert all(k.startswith("net.") for k in model.state_dict())
    assert {id(p) for p in model.features.parameters()} | {id(p) for p in head.parameters()} == \
        {id(p) for p in model.parameters()}  # views of the same modules: freezing features reaches the model


@pytest.mark.parametrize("name", [n for n in MODELS if any(isinstance(m, CenterCrop) for m in layers(n))])
def test_cropping_models_ignore_the_frame_and_keep_the_centre(name, mnist_test):
    """A CenterCrop model's answer does not depend on the 2-pixel frame, and does on the centre."""
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = to_input(mnist_test[0][:8])
    framed, centre = x.clone(), x.clone()
    framed[:, :, :2] = framed[:, :, -2:] = framed[:, :, :, :2] = framed[:, :, :, -2:] = 3.0
    centre[:, :, 2:26, 2:26] = 3.0
    with torch.no_grad():
        assert torch.equal(model(framed), model(x))
        assert not torch.allclose(model(centre), model(x))


def test_mnist_ink_outside_the_crop_is_negligible(mnist_test):
    """What CenterCrop rests on: MNIST's 2-pixel frame holds under 0.5% of its ink."""
    ink = mnist_test[0].float()
    assert ink[:, :, 2:26, 2:26].sum() > 0.995 * ink.sum()


def test_receptive_field_calculator():
    assert receptive_field([nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3)]) == 5
    assert receptive_field([nn.Conv2d(1, 1, 3), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3)]) == 8


@pytest.mark.parametrize("name", [n for n in MODELS if is_own(n)] + ["ref_allconv_12k", "ref_gap"])
def test_receptive_field_covers_image(name):
    assert receptive_field(layers(name)) >= 28


# ---------------------------------------------------------------- device

def test_runs_on_cpu(trained, mnist_test):
    model = copy.deepcopy(trained.model).cpu()
    assert next(model.parameters()).device.type == "cpu"
    assert probabilities(model, mnist_test[0][:8]).shape == (8, 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_runs_on_cuda(trained, mnist_test):
    model = copy.deepcopy(trained.model).cuda()
    on_gpu = probabilities(model, mnist_test[0][:64])
    assert on_gpu.device.type == "cuda"
    assert torch.allclose(on_gpu.cpu(), probabilities(trained.model, mnist_test[0][:64]), atol=1e-3)
