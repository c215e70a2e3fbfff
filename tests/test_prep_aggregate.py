"""Aggregation, pairing and balancing against hand-computed tables, on real stores landed through ingest."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from prefstream.prep import aggregate, pairs, recommended_weights
from prefstream.store import open_store
from prefstream.tests.store_helpers import land


def event(event_id, kind, annotator, ts="2026-11-01T10:00:00Z", prompt="How?", **fields):
    return {"schema_version": 1, "kind": kind, "event_id": event_id, "ts": ts, "prompt": prompt, "annotator_id": annotator, **fields}


def landed(folder: Path, messages):
    """A read connection to a store with ``messages`` landed from a JSONL file, every one of them valid."""
    store = open_store(land(folder, messages, expect_all_valid=True), create=False)
    try:
        return store.read()
    finally:
        store.close()


X, Y = "Answer X", "Answer Y"
HAND = [
    # {X, Y}: u1 and u2 prefer X (u2 was shown it swapped), u3 prefers Y; u4 preferred Y, then
    # changed to a tie (only the later event is current) -> X wins 2 of 4 annotators.
    event("p1", "pairwise", "u1", response_a=X, response_b=Y, choice="a"),
    event("p2", "pairwise", "u2", response_a=Y, response_b=X, choice="b"),
    event("p3", "pairwise", "u3", response_a=X, response_b=Y, choice="b"),
    event("p4", "pairwise", "u4", response_a=X, response_b=Y, choice="b"),
    event("p5", "pairwise", "u4", ts="2026-11-02T10:00:00Z", response_a=Y, response_b=X, choice="tie"),
    # {Z, W}: one vote each -> tie
    event("p6", "pairwise", "u1", prompt="Other?", response_a="Z", response_b="W", choice="a"),
    event("p7", "pairwise", "u2", prompt="Other?", response_a="Z", response_b="W", choice="b"),
    # {K, K}: the same text twice
    event("p8", "pairwise", "u1", prompt="Same?", response_a="K", response_b="K", choice="a"),
    # {M, N}: only ties
    event("p9", "pairwise", "u1", prompt="Third?", response_a="M", response_b="N", choice="tie"),
    event("p10", "pairwise", "u2", prompt="Third?", response_a="N", response_b="M", choice="tie"),
    # {P, Q}: P wins 2 of 3
    event("p11", "pairwise", "u1", prompt="Fourth?", response_a="P", response_b="Q", choice="a"),
    event("p12", "pairwise", "u2", prompt="Fourth?", response_a="Q", response_b="P", choice="b"),
    event("p13", "pairwise", "u3", prompt="Fourth?", response_a="P", response_b="Q", choice="b"),
    # thumbs: R up, up, down -> desirable 2/3; S up, down -> tie; T down, down -> undesirable 1.0
    event("t1", "thumbs", "u1", response="R", rating="up"),
    event("t2", "thumbs", "u2", response="R", rating="up"),
    event("t3", "thumbs", "u3", response="R", rating="down"),
    event("t4", "thumbs", "u1", response="S", rating="up"),
    event("t5", "thumbs", "u2", response="S", rating="down"),
    event("t6", "thumbs", "u1", response="T", rating="down"),
    event("t7", "thumbs", "u2", response="T", rating="down"),
]


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    con = landed(tmp_path_factory.mktemp("hand"), HAND)
    yield con
    con.close()


def decided_pairs(con, weights=None, min_agreement=0.0, window=aggregate.Window()):
    default = aggregate.register_weights(con, weights)
    aggregate.aggregate_pairs(con, window, reliability=weights is not None, default_weight=default, min_agreement=min_agreement)
    return con.sql(
        "SELECT prompt, chosen, rejected, weight, agreement, n_annotators, source_event_ids, drop_reason FROM _prep_pairs ORDER BY prompt"
    ).fetchall()


def decided_thumbs(con, min_agreement=0.0):
    aggregate.register_weights(con, None)
    aggregate.aggregate_thumbs(con, aggregate.Window(), min_agreement=min_agreement)
    return con.sql("SELECT completion, label, weight, agreement, n_annotators, drop_reason FROM _prep_thumbs ORDER BY completion").fetchall()


def test_pairwise_majority_matches_the_hand_computed_table(hand):
    rows = decided_pairs(hand)
    assert [(r[0], r[1], r[2], r[3], r[4], r[5], r[7]) for r in rows] == [
        ('"Fourth?"', "P", "Q", pytest.approx(2 / 3), pytest.approx(2 / 3), 3, None),
        ('"How?"', X, Y, 0.5, 0.5, 4, None),
        ('"Other?"', "W", "Z", 0.5, 0.5, 2, "tie"),
        ('"Same?"', "K", "K", 1.0, 1.0, 1, "identical_responses"),
        ('"Third?"', "M", "N", 0.0, 0.0, 2, "only_ties"),
    ]
    assert rows[1][6] == ["p1", "p2", "p3", "p5"]  # u4's superseded p4 is not current
    assert aggregate.drop_counts(hand, "_prep_pairs", aggregate.PAIR_REASONS, "pairwise") == {
        "pairwise_non_text_content": 0, "pairwise_identical_responses": 1, "pairwise_only_ties": 1, "pairwise_no_reliable_votes": 0,
        "pairwise_tie": 1, "pairwise_low_agreement": 0,
    }


def test_a_judgement_cast_after_the_window_never_counts(hand):
    # u4 changed a vote for Y into a tie on Nov 2: a window ending before that sees the vote
    # for Y (X and Y 2:2, a tie), never the later change (which makes X win 2 of 4).
    rows = {r[0]: r for r in decided_pairs(hand, window=aggregate.Window(until=datetime(2026, 11, 2, tzinfo=timezone.utc)))}
    assert rows['"How?"'][5:] == (4, ["p1", "p2", "p3", "p4"], "tie")
    # A window starting after the others' votes sees only u4's change.
    later = aggregate.Window(since=datetime(2026, 11, 2, tzinfo=timezone.utc))
    assert [(r[0], r[6], r[7]) for r in decided_pairs(hand, window=later)] == [('"How?"', ["p5"], "only_ties")]


def test_timestamps_outside_the_plausible_range_are_left_out(tmp_path):
    from prefstream.quality import Settings, plausible_sql

    con = landed(tmp_path, [
        event("ok", "pairwise", "u1", response_a="A", response_b="B", choice="a"),
        event("old", "pairwise", "u2", ts="1970-01-01T00:00:00Z", response_a="A", response_b="B", choice="b"),
        # u1 again, stamped in 2099: left out before the latest vote is chosen, so it does not supersede u1's real one.
        event("future", "pairwise", "u1", ts="2099-11-01T00:00:00Z", response_a="A", response_b="B", choice="b"),
    ])
    window = aggregate.Window(plausible=plausible_sql(Settings()))
    assert aggregate.implausible_counts(con, window, ["pairwise"]) == {"pairwise": 2}
    rows = decided_pairs(con, window=window)
    assert [(r[1], r[2], r[5], r[6]) for r in rows] == [("A", "B", 1, ["ok"])]
    con.close()


def test_min_agreement_drops_items_below_the_winning_share(hand):
    rows = {r[0]: r[7] for r in decided_pairs(hand, min_agreement=0.6)}
    assert rows['"Fourth?"'] is None and rows['"How?"'] == "low_agreement"  # 2/3 kept, 2/4 dropped


def test_reliability_weighting_against_hand_computed_votes(hand):
    # X: u1 + u2 = 0.4, Y: u3 = 0.9, tie: u4 = 0.5 -> Y wins with 0.9 / 1.8 of the weight,
    # backed by 1 of 4 annotators.
    rows = {r[0]: r for r in decided_pairs(hand, {"u1": 0.2, "u2": 0.2, "u3": 0.9, "u4": 0.5})}
    assert rows['"How?"'][1:6] == (Y, X, 0.5, 0.25, 4)
    # u3 alone (0.9) outweighs u1 + u2 (0.4) on {P, Q} too.
    assert rows['"Fourth?"'][1:3] == ("Q", "P")


def test_unknown_annotators_weigh_as_the_median_known_one(hand):
    assert aggregate.register_weights(hand, {"u1": 0.2, "u2": 0.3, "u3": 0.9, "x": None}) == 300_000
    assert aggregate.register_weights(hand, {"u1": 0.2, "u2": 0.4}) == 300_000
    assert aggregate.register_weights(hand, {}) == aggregate.WEIGHT_SCALE
    assert aggregate.register_weights(hand, None) == 1
    # u4 unknown -> median of (0.2, 0.2, 0.9) = 0.2: X 0.4 vs Y 0.9, tie 0.2
    rows = {r[0]: r for r in decided_pairs(hand, {"u1": 0.2, "u2": 0.2, "u3": 0.9})}
    assert rows['"How?"'][1:4] == (Y, X, pytest.approx(0.9 / 1.5))


def test_annotators_of_weight_zero_cast_no_vote(hand):
    rows = {r[0]: r[7] for r in decided_pairs(hand, {"u1": 0.0, "u2": 0.0, "u3": 0.0, "u4": 0.0})}
    assert rows['"How?"'] == "no_reliable_votes"


def test_thumbs_majority_matches_the_hand_computed_table(hand):
    assert decided_thumbs(hand) == [
        ("R", True, pytest.approx(2 / 3), pytest.approx(2 / 3), 3, None),
        ("S", False, 0.5, 0.5, 2, "tie"),
        ("T", False, 1.0, 1.0, 2, None),
    ]


def test_kto_rows_keep_ties_as_both_labels_and_add_decided_pairs(hand):
    decided_thumbs(hand)
    decided_pairs(hand)
    pairs.kto_rows(hand, ties="drop", include_pairwise=False)
    assert hand.sql("SELECT completion, label FROM _prep_rows ORDER BY ALL").fetchall() == [("R", True), ("T", False)]
    pairs.kto_rows(hand, ties="keep", include_pairwise=True)
    rows = hand.sql("SELECT completion, label, weight, agreement FROM _prep_rows ORDER BY completion, label").fetchall()
    third = pytest.approx(2 / 3)
    assert rows == [
        (X, True, 0.5, 0.5), (Y, False, 0.5, 0.5),  # the {X, Y} pair: chosen and rejected
        ("P", True, third, third), ("Q", False, third, third),  # the {P, Q} pair
        ("R", True, third, third),
        ("S", False, 0.5, 0.5), ("S", True, 0.5, 0.5),  # the tie, kept as both readings
        ("T", False, 1.0, 1.0),
    ]


THUMBS_FOR_PAIRS = [
    # Q0: two up-rated items and one down-rated one -> one pair, one up item left over
    event("a1", "thumbs", "u1", prompt="Q0?", response="good one", rating="up"),
    event("a2", "thumbs", "u2", prompt="Q0?", response="good one", rating="up"),
    event("a3", "thumbs", "u1", prompt="Q0?", response="good two", rating="up"),
    event("b1", "thumbs", "u1", prompt="Q0?", response="bad one", rating="down"),
    event("b2", "thumbs", "u2", prompt="Q0?", response="bad one", rating="up"),
    event("b3", "thumbs", "u3", prompt="Q0?", response="bad one", rating="down"),
    # Q1: only an up-rated item -> unpaired
    event("c1", "thumbs", "u1", prompt="Q1?", response="lonely", rating="up"),
    # Q2: up and down items that were also compared head to head -> the pairwise judgement wins
    event("d1", "thumbs", "u1", prompt="Q2?", response="fine", rating="up"),
    event("d2", "thumbs", "u1", prompt="Q2?", response="poor", rating="down"),
    event("d3", "pairwise", "u2", prompt="Q2?", response_a="poor", response_b="fine", choice="b"),
]


def test_pairs_from_thumbs_on_the_same_prompt(tmp_path):
    con = landed(tmp_path, THUMBS_FOR_PAIRS)
    aggregate.register_weights(con, None)
    aggregate.aggregate_pairs(con, aggregate.Window())
    aggregate.aggregate_thumbs(con, aggregate.Window())
    dropped = pairs.dpo_rows(con, include_thumbs=True, max_pairs_per_prompt=4, seed=0)
    rows = con.sql("SELECT prompt, chosen, rejected, weight, agreement, n_annotators, source_event_ids FROM _prep_rows ORDER BY prompt").fetchall()
    q0 = [r for r in rows if r[0] == '"Q0?"']
    assert len(q0) == 1
    prompt, chosen, rejected, weight, agreement, n, ids = q0[0]
    assert chosen in ("good one", "good two") and rejected == "bad one"
    # "bad one" is down 2 of 3: the pair's agreement is the weaker item's, its weight the product
    assert agreement == pytest.approx(2 / 3) and weight == pytest.approx(2 / 3)
    assert n == (2 if chosen == "good one" else 1) + 3 and ids == sorted(ids) and {"b1", "b2", "b3"} <= set(ids)
    assert [r[1:3] for r in rows if r[0] == '"Q2?"'] == [("fine", "poor")]  # once, from the pairwise event
    assert dropped["thumbs_unpaired"] == 2 and dropped["thumbs_already_compared"] == 1
    # The seed decides which up item is paired, and the choice is stable for a seed.
    chosen_by_seed = set()
    for seed in range(8):
        pairs.dpo_rows(con, include_thumbs=True, max_pairs_per_prompt=4, seed=seed)
        chosen_by_seed.add(con.sql("SELECT chosen FROM _prep_rows WHERE prompt = '\"Q0?\"'").fetchall()[0][0])
    assert chosen_by_seed == {"good one", "good two"}
    con.close()


def test_length_balancing_cuts_the_majority_side_to_the_minority(tmp_path):
    messages = []
    for i in range(40):
        long, short = "long answer " * 5 + str(i), f"short {i}"
        longer_wins = i < 30  # 30 pairs where the longer wins, 10 where the shorter does
        messages.append(event(f"e{i}", "pairwise", "u1", prompt=f"Q{i}?", response_a=long, response_b=short, choice="a" if longer_wins else "b"))
    messages.append(event("eq", "pairwise", "u1", prompt="Q-eq?", response_a="same", response_b="size", choice="a"))
    con = landed(tmp_path, messages)
    aggregate.register_weights(con, None)
    aggregate.aggregate_pairs(con, aggregate.Window())
    pairs.dpo_rows(con, include_thumbs=False, max_pairs_per_prompt=4, seed=0)
    assert pairs.length_stats(con) == {"longer_wins": 0.75, "longer": 30, "shorter": 10, "equal_length": 1}
    assert pairs.balance_length(con, seed=0) == 20
    assert pairs.length_stats(con) == {"longer_wins": 0.5, "longer": 10, "shorter": 10, "equal_length": 1}
    con.close()


@pytest.mark.parametrize(
    "desirable, undesirable, weights",
    [
        (100, 100, (1.0, 1.0)),  # 1:1 is inside the band
        (130, 100, (1.0, 1.0)),  # 1.3 too
        (50, 100, (2.0, 1.0)),  # 0.5 -> desirable x2 -> 1:1
        (300, 100, (1.0, 2.25)),  # 3.0 -> undesirable x2.25 -> 4:3
        (1000, 7, (1.0, 107.1429)),  # rounded up, so the ratio stays inside
        (0, 5, (1.0, 1.0)),  # nothing to balance
    ],
)
def test_kto_weights_follow_trls_band(desirable, undesirable, weights):
    out = recommended_weights(desirable, undesirable)
    assert (out["desirable_weight"], out["undesirable_weight"]) == weights
    if desirable and undesirable:
        ratio = out["desirable_weight"] * desirable / (out["undesirable_weight"] * undesirable)
        assert 1.0 <= ratio <= 4 / 3 and ratio == pytest.approx(out["weighted_ratio"])
