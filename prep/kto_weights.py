"""TRL's rule for KTO class weights.

TRL's KTOTrainer wants ``desirable_weight * D / (undesirable_weight * U)`` in [1, 4/3]
for D desirable and U undesirable examples. One weight stays 1.0; the other is set so the
weighted ratio lands on the nearest edge of that band (unchanged when already inside):

    D / U < 1        desirable_weight   = ceil4(U / D),              undesirable_weight = 1.0
    D / U > 4/3      undesirable_weight = ceil4((D / U) / (4 / 3)),  desirable_weight   = 1.0
    otherwise        both 1.0

``ceil4`` rounds up to 4 decimals, which keeps the rounded ratio inside the band. With no
example of one class there is nothing to balance: both weights stay 1.0.
"""

from __future__ import annotations

import math

BAND = (1.0, 4.0 / 3.0)


def recommended_weights(desirable: int, undesirable: int) -> dict[str, float | int | None]:
    """``{"desirable", "undesirable", "desirable_weight", "undesirable_weight", "weighted_ratio"}``."""
    out: dict[str, float | int | None] = {"desirable": desirable, "undesirable": undesirable}
    if desirable == 0 or undesirable == 0:
        return {**out, "desirable_weight": 1.0, "undesirable_weight": 1.0, "weighted_ratio": None}
    ratio = desirable / undesirable
    d_weight, u_weight = 1.0, 1.0
    if ratio < BAND[0]:
        d_weight = _round_up(BAND[0] / ratio)  # more undesirable: up-weight the desirable
    elif ratio > BAND[1]:
        u_weight = _round_up(ratio / BAND[1])  # more desirable: up-weight the undesirable
    return {**out, "desirable_weight": d_weight, "undesirable_weight": u_weight, "weighted_ratio": d_weight * desirable / (u_weight * undesirable)}


def _round_up(x: float) -> float:
    # Rounded up to 4 decimals so the weighted ratio stays inside the band after rounding.
    return math.ceil(x * 10_000) / 10_000
