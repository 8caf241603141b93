"""Calibration where the model has never been (docs/models.md, "What would take CASIA's ECE under
0.12"): ``T x unfamiliarity ^ s`` fitted as served (pooled out-of-fold logits with each trained corpus
scored by the head that never heard it) and on the corpora left out alone; and the temperature fitted
on the corpora left out, times ``unfamiliarity ^ s``, applied only to a language never heard, as a
language-identification signal would allow. ECE, and how many clips are answered (not "unsure") and
how many of those are right."""

from __future__ import annotations

import numpy as np
from common import COLUMNS, TRAINED, setting

from sera.metrics import expected_calibration_error
from sera.model import softmax
from sera.training.learners.whisper.head import fit_baseline, fit_plain, unfamiliarity
from sera.training.protocol import fit_calibration, fit_temperature, masked_logits, selective, unfamiliar_scale

L2 = 100.0  # the shipped head's, chosen by the training run's inner CV

if __name__ == "__main__":
    s = setting(__doc__)
    data, (fold, splits, left_out) = s.data, s.folds()

    def logits(heads, idx: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
        mask = data.mask[idx] if allowed is None else data.mask[idx] & allowed
        return masked_logits((data.x[idx] - heads.center) / heads.scale @ heads.plain_w + heads.plain_b, mask)

    folds = [fit_baseline(data, split.train, fit_plain(data, split.train, L2), 0) for split in splits]
    held = np.flatnonzero(fold >= 0)
    oof, oof_u = np.zeros(data.mask.shape), np.ones(len(data.y))
    for heads, split in zip(folds, splits):
        oof[split.test], oof_u[split.test] = logits(heads, split.test), unfamiliarity(heads, data.x[split.test])
    in_language = (oof[held], data.y[held], oof_u[held])
    unheard = []
    for c, split in sorted(left_out.items()):
        heads = fit_baseline(data, split.train, fit_plain(data, split.train, L2), 0)
        allowed = data.mask[split.train].any(0)
        keep = split.test[allowed[data.y[split.test]]]
        unheard.append((c, logits(heads, keep, allowed), data.y[keep], unfamiliarity(heads, data.x[keep])))
        print(f"{c} left out: median unfamiliarity {np.median(unheard[-1][3]):.2f}")
    print(f"held-out voices of the trained corpora: median unfamiliarity {np.median(oof_u[held]):.2f}")
    never = {c: [(logits(h, idx), data.y[idx], unfamiliarity(h, data.x[idx])) for h in folds]
             for c in COLUMNS if c not in TRAINED for idx in [np.flatnonzero(data.corpus == c)]}  # fmt: skip
    for c, runs in never.items():
        print(f"{c}: median unfamiliarity {np.median(np.concatenate([u for _, _, u in runs])):.2f}")
    served = fit_calibration(*(np.concatenate(p) for p in zip(in_language, *[u[1:] for u in unheard])))
    recipes = {"as served": served, "left out alone": fit_calibration(*(np.concatenate(p) for p in zip(*[u[1:] for u in unheard])))}
    switch = fit_temperature(np.concatenate([u[1] for u in unheard]), np.concatenate([u[2] for u in unheard]))
    recipes[f"never-heard switch: {switch:.2f} x u^{served[1]:.2f}"] = (switch, served[1])

    def probs(x: np.ndarray, u: np.ndarray, temperature: float, slope: float) -> np.ndarray:
        return softmax(x / unfamiliar_scale(u, slope), temperature)

    for name, (temperature, slope) in recipes.items():
        line = [f"{name}: T {temperature:.2f}, s {slope:.2f}"]
        if not name.startswith("never-heard"):  # the switch leaves the trained languages as served
            line.append(f"in-language ECE {expected_calibration_error(in_language[1], probs(*in_language[::2], temperature, slope)):.3f}")
        for c, runs in never.items():
            ece = np.mean([expected_calibration_error(y, probs(x, u, temperature, slope)) for x, y, u in runs])
            chosen = [selective(probs(x, u, temperature, slope), y) for x, y, u in runs]
            line.append(f"{c} ECE {ece:.3f}, answered {np.mean([c['answered'] for c in chosen]):.0%}, "
                        f"right {np.mean([c['answered_accuracy'] for c in chosen]):.0%}")  # fmt: skip
        print("\n  ".join(line))
