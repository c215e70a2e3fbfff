"""Preference tuning on torch + transformers: DPO, IPO, KTO, SimPO and ORPO with TRL's conventions.

``run(settings)`` trains one run through the one loop in :mod:`prefstream.train.loop`; the
objectives are pure losses (:mod:`prefstream.train.losses`) plus what their batches need
(:mod:`prefstream.train.objectives`).
"""

from __future__ import annotations

from .settings import TrainSettings


def run(settings: TrainSettings, resume: bool = False) -> dict:
    """Train ``settings.kind`` on ``settings.data``; returns the final metrics."""
    from .loop import train

    return train(settings, resume=resume)


__all__ = ["TrainSettings", "run"]
