"""The CNN's training recipes: the shipped one, its personal-baseline variant, and the ablation that
builds it from the paper's, one idea at a time."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Recipe:
    """One way to train; the ablation is a list of these, each adding one idea to the last."""

    name: str
    head: str = "stats"
    channels: tuple[int, ...] = (16, 32, 64, 128)
    dropout: float = 0.1
    epochs: int = 120
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-3
    shift: bool = True  # train on the speech at random places in its window
    opus: bool = True  # train on Opus round-trips too
    specaugment: bool = True
    mixup: float = 0.2  # Beta(alpha, alpha) mixing; 0 turns it off
    time_pool: int = 2  # average this many 10 ms frames before the first convolution
    band_norm: bool = True  # subtract each Mel band's mean over the window: the voice's long-term spectrum
    # "window": that mean, inside the net. "speaker": subtracted before the net, half the draws the window's
    # own mean, half the speaker's long-term mean from a few of their other clips (a personal baseline).
    reference: str = "window"


FINAL = Recipe("sera: stats pooling + 20 ms frames + band norm + shift + SpecAugment + mixup + Opus")


PERSONAL = replace(FINAL, name="sera with a personal baseline: band means of the window or of the speaker's other clips",
                   band_norm=False, reference="speaker")  # fmt: skip


ABLATION = (
    Recipe("paper: 4 conv + flatten/dense, Adam", head="flatten", time_pool=1, band_norm=False, shift=False,
           opus=False, specaugment=False, mixup=0.0, weight_decay=0.0),
    Recipe("+ statistics pooling head, AdamW", time_pool=1, band_norm=False, shift=False, opus=False,
           specaugment=False, mixup=0.0),
    Recipe("+ frames averaged in pairs (20 ms)", band_norm=False, shift=False, opus=False,
           specaugment=False, mixup=0.0),
    Recipe("+ per-band mean normalisation", shift=False, opus=False, specaugment=False, mixup=0.0),
    Recipe("+ time-shift", opus=False, specaugment=False, mixup=0.0),
    Recipe("+ SpecAugment", opus=False, mixup=0.0),
    Recipe("+ mixup", opus=False),
    FINAL,
)  # fmt: skip


# ``sera train --model cnn --recipe NAME``: the shipped recipe, its personal-baseline variant, and each
# step of the ablation, so any of them can be cross-validated beside the others.
RECIPES: dict[str, Recipe] = {"sera": FINAL, "personal": PERSONAL} | dict(
    zip(("paper", "stats", "frames", "band-norm", "shift", "specaugment", "mixup"), ABLATION[:-1])
)
