"""recipes.py: a recipe is one frozen value, and a sidecar of any version reads back as the recipe it records."""
import json
from dataclasses import FrozenInstanceError, replace

import pytest

import train
from recipes import Recipe, changed


def test_a_recipe_cannot_be_changed_in_place():
    with pytest.raises(FrozenInstanceError):
        train.recipe("fastnet").augment_strengths.rotate_deg = 90  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        train.RECIPE.lr = 1.0  # type: ignore[misc]


def test_old_sidecars_give_their_recipe():
    """Sidecars written before Recipe listed "printed" among the augmentations, with its counts among the
    strengths: they read back as the same recipe."""
    old = {"batch_size": 128, "lr": 0.02, "optimizer": {"weight_decay": 1e-4, "beta2": 0.999, "eps": 1e-8},
           "schedule": {"pct_start": 0.1, "div_factor": 4.0, "final_div_factor": 100.0, "beta1": [0.95, 0.85]},
           "label_smoothing": 0.1, "augment": ["rotate", "affine", "stroke", "noise", "printed", "lowres"],
           "augment_strengths": {"rotate_deg": 7.0, "translate_px": 1.0, "scale": [0.9, 1.1], "shear_deg": 5.0,
                                 "stroke_prob": 0.3, "erase_prob": 0.5, "erase_area": [0.02, 0.12],
                                 "noise_prob": 0.01, "noise_std_max": 0.3, "lowres_prob": 0.2, "lowres_px": [11, 14],
                                 "printed_per_digit": 50, "printed_ones": 150, "printed_repeats": 4}}
    assert Recipe.from_sidecar(old) == train.RECIPE
    without = dict(old, augment=["rotate"])
    assert Recipe.from_sidecar(without) == replace(train.RECIPE, augment=("rotate",), printed=None)
    new = json.loads(json.dumps(train.VARIANT_RECIPES["tinynet"].to_sidecar()))
    assert Recipe.from_sidecar(new) == train.VARIANT_RECIPES["tinynet"]


def test_one_field_changed_by_name():
    r = train.RECIPE
    assert changed(r, "optimizer.beta2", "0.99") == replace(r, optimizer=replace(r.optimizer, beta2=0.99))
    assert changed(r, "augment_strengths.lowres_px", "10,14").augment_strengths.lowres_px == (10, 14)
    assert changed(r, "augment", "rotate,affine").augment == ("rotate", "affine")
    assert changed(r, "augment", "").augment == ()
    assert changed(r, "printed", "none").printed is None and changed(r, "printed.ones", "250").printed.ones == 250
    assert changed(r, "batch_size", "64").batch_size == 64 and isinstance(changed(r, "lr", "1").lr, float)


@pytest.mark.parametrize("key, text, needle", [("nope", "1", "no recipe field 'nope'"),
                                               ("optimizer", "1", "takes its fields one by one"),
                                               ("lr", "x", "could not convert")])
def test_a_field_that_cannot_be_changed(key, text, needle):
    with pytest.raises(ValueError, match=needle):
        changed(train.RECIPE, key, text)
