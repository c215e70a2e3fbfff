"""Preference tuning on torch + transformers: DPO, IPO and KTO with TRL's conventions.

``run(settings)`` trains one run; see :mod:`prefstream.train.dpo` (DPO / IPO) and
:mod:`prefstream.train.kto` (KTO) for the loops, :mod:`prefstream.train.losses` for the losses.
"""

from __future__ import annotations

from .settings import TrainSettings


def run(settings: TrainSettings, resume: bool = False) -> dict:
    """Train ``settings.kind`` on ``settings.data``; returns the final metrics."""
    if settings.kind == "kto":
        from .kto import train
    else:
        from .dpo import train
    return train(settings, resume=resume)


__all__ = ["TrainSettings", "run"]
