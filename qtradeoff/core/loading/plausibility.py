"""Whether an fp32 baseline is plausible for a trained classifier: a score near chance on labelled data is the
usual sign of wrong preprocessing (size, channels, mean/std, inverted colours) or of classes in another order.

Plain Python (no torch): the window imports it before any model work.
"""

from __future__ import annotations


def implausible_below(num_classes: int) -> float:
    """The top-1 accuracy under which a trained ``num_classes``-way classifier's baseline is implausible: three
    times chance, at least 20 % and at most 50 % (a 2-way model below 50 % is worse than a coin)."""
    return min(0.5, max(3.0 / num_classes, 0.2))


def baseline_warning(accuracy: float | None, num_classes: int | None, data_name: str = "the data") -> str | None:
    """One sentence saying what to check when ``accuracy`` is implausibly low for ``num_classes`` classes; None
    when it is plausible or cannot be judged (no labels, fewer than two classes)."""
    if accuracy is None or not num_classes or num_classes < 2:
        return None
    if accuracy >= implausible_below(num_classes):
        return None
    chance = 1 / num_classes
    return (f"The fp32 baseline is {accuracy:.1%} on {data_name} ({num_classes} classes, chance {chance:.1%}), "
            "implausibly low for a trained model: check the data's preprocessing (image size, channels, mean/std, "
            "inverted colours) and that its classes are in the model's label order (File → Load data…).")
