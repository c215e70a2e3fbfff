"""Realistic feedback telemetry, with switches that plant known biases.

Items (a prompt with one response, or a prompt with a pair of responses) are rated by
several annotators each, so agreement can be measured. Responses are "good" (start
"Sure! To ...", give steps) or "bad" (start "Sorry, ...", refuse); each is padded with
filler sentences to a length drawn independently of its quality, so a clean simulation
has no length bias (longer wins about 50%) and a tiny model can learn the good/bad pattern.

Honest annotators (``ann-00`` ...) agree with the latent quality with probability
``accuracy``. Planted behaviours (``plant``):

- ``position``: annotator ``ann-position`` picks the first-shown response 90% of the time;
- ``random``: annotator ``ann-random`` clicks at random (pairwise and thumbs);
- ``flipped``: annotator ``ann-flipped`` systematically picks the bad response / rating;
- ``length``: the whole population prefers the longer response 60% of the time;
- ``imbalance``: 90% of thumbs responses are good, so "up" dominates.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

PLANTS = ("position", "random", "flipped", "length", "imbalance")
PLANTED_ANNOTATORS = {"position": "ann-position", "random": "ann-random", "flipped": "ann-flipped"}

_VERBS = ["bake", "fix", "paint", "clean", "build", "plan", "write", "sort", "tune", "measure",
          "cook", "repair", "design", "test", "install", "prune", "sharpen", "brew", "pack", "label"]
_NOUNS = ["bread loaf", "bicycle", "fence", "kitchen", "bookshelf", "garden", "cover letter", "spreadsheet",
          "guitar", "window", "database", "laptop", "tomato plant", "knife", "coffee", "suitcase", "budget",
          "resume", "birdhouse", "playlist", "sourdough", "tent", "drone", "aquarium", "speech", "sweater",
          "query", "website", "lamp", "chair"]
_STEPS = ["gather what you need", "read the instructions twice", "start with a small test",
          "measure carefully", "work slowly and check each part", "clean up as you go",
          "ask for a second opinion", "write down what worked", "let it rest for a while",
          "compare the result with an example"]
_FILLER = ["This is a common question.", "Many people wonder about this.", "It depends on the situation.",
           "Results can vary from case to case.", "Take your time with it.", "Practice makes it easier.",
           "There are several ways to approach it.", "Keep safety in mind."]
_SYSTEM = "You are a helpful assistant."
# Response lengths (characters) are drawn from this range whatever the quality.
_MIN_LENGTH, _MAX_LENGTH = 90, 260
_MODELS = ["assistant-v1", "assistant-v2"]


@dataclass(frozen=True)
class SimConfig:
    """Settings of one simulated stream; the same settings give the same events."""

    n: int = 1000
    seed: int = 0
    annotators: int = 8
    raters_per_item: int = 3
    pairwise_share: float = 0.5
    chat_share: float = 0.3
    accuracy: float = 0.9
    tie_rate: float = 0.03
    update_rate: float = 0.02
    duplicate_rate: float = 0.0
    invalid_rate: float = 0.0
    days: int = 7
    start: datetime = datetime(2026, 11, 1, tzinfo=timezone.utc)
    plant: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        unknown = set(self.plant) - set(PLANTS)
        if unknown:
            raise ValueError(f"unknown plant {sorted(unknown)}; choose from {', '.join(PLANTS)}")
        if self.raters_per_item < 1 or self.annotators < 1:
            raise ValueError("annotators and raters_per_item must be at least 1")


def annotator_pool(config: SimConfig) -> list[str]:
    pool = [f"ann-{i:02d}" for i in range(config.annotators)]
    return pool + [PLANTED_ANNOTATORS[p] for p in PLANTS if p in config.plant and p in PLANTED_ANNOTATORS]


def simulate(config: SimConfig) -> Iterator[dict[str, Any] | bytes]:
    """Yield ``config.n`` messages in time order: event dicts, or raw bytes for invalid ones."""
    rng = random.Random(config.seed)
    pool = annotator_pool(config)
    raters = min(config.raters_per_item, len(pool))
    span = timedelta(days=config.days).total_seconds()
    emitted = 0
    item = 0
    while emitted < config.n:
        base = config.start + timedelta(seconds=span * emitted / config.n)
        model = _MODELS[0] if emitted < config.n / 2 else _MODELS[1]
        events = _item_events(rng, config, pool, raters, base, model)
        item += 1
        for event in events:
            if emitted >= config.n:
                return
            if config.invalid_rate and rng.random() < config.invalid_rate:
                yield _invalid(rng, event)
            else:
                yield event
            emitted += 1
            if config.duplicate_rate and emitted < config.n and rng.random() < config.duplicate_rate:
                yield event  # a producer retry: same event_id, same content
                emitted += 1


def _item_events(rng: random.Random, config: SimConfig, pool: list[str], raters: int, base: datetime, model: str) -> list[dict[str, Any]]:
    verb, noun = rng.choice(_VERBS), rng.choice(_NOUNS)
    question = f"How do I {verb} a {noun}?"
    prompt: Any = question
    if rng.random() < config.chat_share:
        prompt = [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": question}]
    events = []
    if rng.random() < config.pairwise_share:
        good, bad = _response(rng, verb, noun, True), _response(rng, verb, noun, False)
        for k, annotator in enumerate(rng.sample(pool, raters)):
            ts = base + timedelta(seconds=rng.uniform(0, 600) + k)
            events.append(_pairwise(rng, config, prompt, good, bad, annotator, ts, model))
    else:
        good_share = 0.9 if "imbalance" in config.plant else 0.5
        is_good = rng.random() < good_share
        response = _response(rng, verb, noun, is_good)
        for k, annotator in enumerate(rng.sample(pool, raters)):
            ts = base + timedelta(seconds=rng.uniform(0, 600) + k)
            events.append(_thumbs(rng, config, prompt, response, is_good, annotator, ts, model))
    if config.update_rate and events and rng.random() < config.update_rate * len(events):
        # The same annotator changes their mind later: a new event that supersedes the first.
        later = dict(events[0])
        later["event_id"] = _uuid(rng)
        later["ts"] = _rfc3339(datetime.fromisoformat(later["ts"]) + timedelta(hours=rng.uniform(1, 24)))
        if later["kind"] == "thumbs":
            later["rating"] = "down" if later["rating"] == "up" else "up"
        else:
            later["choice"] = {"a": "b", "b": "a", "tie": "a"}[later["choice"]]
        events.append(later)
    return events


def _response(rng: random.Random, verb: str, noun: str, good: bool) -> str:
    if good:
        steps = rng.sample(_STEPS, 2)
        text = f"Sure! To {verb} a {noun}, first {steps[0]}. Then {steps[1]}."
    else:
        text = f"Sorry, I can't help with that {noun}."
    # Pad to a length drawn independently of quality, so length carries no signal.
    target = rng.randint(_MIN_LENGTH, _MAX_LENGTH)
    fillers = rng.sample(_FILLER, len(_FILLER))
    parts = [text]
    while len(" ".join(parts)) < target and fillers:
        parts.append(fillers.pop())
    return " ".join(parts)


def _choice_for(rng: random.Random, config: SimConfig, annotator: str, good_is: str, shown_first: str, longer: str) -> str:
    if annotator == PLANTED_ANNOTATORS["random"]:
        return rng.choice("ab")
    if annotator == PLANTED_ANNOTATORS["position"] and rng.random() < 0.9:
        return shown_first
    if rng.random() < config.tie_rate:
        return "tie"
    bad_is = "b" if good_is == "a" else "a"
    if annotator == PLANTED_ANNOTATORS["flipped"]:
        return bad_is if rng.random() < config.accuracy else good_is
    if "length" in config.plant and longer and rng.random() < 0.6:
        return longer
    return good_is if rng.random() < config.accuracy else bad_is


def _pairwise(rng, config, prompt, good, bad, annotator, ts, model) -> dict[str, Any]:
    good_is = rng.choice("ab")
    a, b = (good, bad) if good_is == "a" else (bad, good)
    shown_first = rng.choice("ab")
    longer = "a" if len(a) > len(b) else "b" if len(b) > len(a) else ""
    return {
        "schema_version": 1,
        "kind": "pairwise",
        "event_id": _uuid(rng),
        "ts": _rfc3339(ts),
        "prompt": prompt,
        "annotator_id": annotator,
        "annotator_kind": "user",
        "response_a": a,
        "response_b": b,
        "choice": _choice_for(rng, config, annotator, good_is, shown_first, longer),
        "shown_first": shown_first,
        "model_a": model,
        "model_b": model,
        "metadata": {"simulated": True},
    }


def _thumbs(rng, config, prompt, response, is_good, annotator, ts, model) -> dict[str, Any]:
    if annotator == PLANTED_ANNOTATORS["random"]:
        up = rng.random() < 0.5
    else:
        correct = rng.random() < config.accuracy
        up = is_good == correct
        if annotator == PLANTED_ANNOTATORS["flipped"]:
            up = not up
    return {
        "schema_version": 1,
        "kind": "thumbs",
        "event_id": _uuid(rng),
        "ts": _rfc3339(ts),
        "prompt": prompt,
        "annotator_id": annotator,
        "annotator_kind": "user",
        "response": response,
        "rating": "up" if up else "down",
        "model_id": model,
        "metadata": {"simulated": True},
    }


def _invalid(rng: random.Random, event: dict[str, Any]) -> bytes:
    broken = dict(event)
    case = rng.randrange(5)
    if case == 0:
        return b'{"schema_version": 1, "kind": "thumbs", '  # truncated JSON
    if case == 1:
        broken.pop("annotator_id")
    elif case == 2:
        broken["kind"] = "stars"
    elif case == 3:
        broken["schema_version"] = 99
    else:
        return b"\xff\xfe not utf-8"
    return orjson.dumps(broken)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _rfc3339(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
