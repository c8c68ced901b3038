"""The Recipe a training run follows, as one frozen value: train.py holds the values (RECIPE, VARIANT_RECIPES),
the checkpoint's sidecar records them, and Recipe.from_sidecar reads them back, from sidecars of every
version."""
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from typing import Optional

from data import Printed, Strengths
from optimizer import AdamW, OneCycle


@dataclass(frozen=True)
class Recipe:
    """What a run trains with; the sidecar records all of it (to_sidecar), and from_sidecar reads it back."""
    batch_size: int
    lr: float  # peak of the one-cycle schedule
    optimizer: AdamW
    schedule: OneCycle
    label_smoothing: float
    augment: tuple  # what data.augment does to each image, from data.AUGMENTATIONS
    augment_strengths: Strengths
    printed: Optional[Printed]  # digits rendered in fonts, added to the training set; None: none

    def to_sidecar(self):
        return asdict(self)

    @classmethod
    def from_sidecar(cls, sidecar):
        """The recipe a sidecar records. Sidecars written before Recipe list "printed" among the augmentations
        and keep its counts in augment_strengths as printed_per_digit, printed_ones and printed_repeats."""
        strengths = dict(sidecar["augment_strengths"])
        printed = sidecar.get("printed")
        old_counts = [strengths.pop(f"printed_{k}", None) for k in ("per_digit", "ones", "repeats")]
        if "printed" in sidecar["augment"]:
            printed = dict(zip(("per_digit", "ones", "repeats"), old_counts, strict=True))
        return cls(sidecar["batch_size"], sidecar["lr"], AdamW(**sidecar["optimizer"]),
                   OneCycle(**dict(sidecar["schedule"], beta1=tuple(sidecar["schedule"]["beta1"]))),
                   sidecar["label_smoothing"], tuple(k for k in sidecar["augment"] if k != "printed"),
                   Strengths(**{k: tuple(v) if isinstance(v, list) else v for k, v in strengths.items()}),
                   Printed(**printed) if printed else None)


def changed(recipe, key, text):
    """`recipe` (or any of its parts) with one field set from text: KEY, or KEY.FIELD into a part
    (optimizer.beta2=0.99, augment_strengths.noise_prob=0.03, augment=rotate,affine, printed=none). The text
    is read as the field's present type: a number, a comma-separated tuple, or none for a part that may be
    absent. A ValueError says what is wrong."""
    head, _, rest = key.partition(".")
    if not is_dataclass(recipe) or head not in {f.name for f in fields(recipe)}:
        raise ValueError(f"no recipe field {key!r}")
    current = getattr(recipe, head)
    if rest:
        return replace(recipe, **{head: changed(current, rest, text)})
    if is_dataclass(current) or current is None:
        if text != "none":
            raise ValueError(f"{head} takes its fields one by one ({head}.FIELD=VALUE), or none")
        return replace(recipe, **{head: None})
    if isinstance(current, tuple):
        kind = type(current[0]) if current else str
        return replace(recipe, **{head: tuple(kind(v) for v in text.split(",") if v)})
    return replace(recipe, **{head: type(current)(text)})
