"""The loop's records: runs, comparison requests, comparisons, rounds and promotions (append-only).

DuckLake has no keys, so each table is a log: a round or a run that changes state gets a new
row and readers take the latest per id (``recorded_at``). The whole run record / round /
comparison / evidence is kept as JSON; the columns answer the usual joins without parsing it.
"""


def migrate(con) -> None:
    con.execute(
        """CREATE TABLE runs (
    run_id          VARCHAR NOT NULL,
    run_dir         VARCHAR NOT NULL,
    status          VARCHAR NOT NULL,
    kind            VARCHAR,
    export_id       VARCHAR,
    base_model      VARCHAR,
    recorded_at     TIMESTAMPTZ NOT NULL,
    record          JSON NOT NULL)"""
    )
    con.execute(
        """CREATE TABLE comparison_requests (
    request_id      VARCHAR NOT NULL,
    round_id        VARCHAR,
    model_a         VARCHAR NOT NULL,
    model_b         VARCHAR NOT NULL,
    candidate_a     VARCHAR NOT NULL,
    candidate_b     VARCHAR NOT NULL,
    ts              TIMESTAMPTZ NOT NULL,
    request         JSON NOT NULL)"""
    )
    con.execute(
        """CREATE TABLE comparisons (
    comparison_id   VARCHAR NOT NULL,
    model_a         VARCHAR NOT NULL,
    model_b         VARCHAR NOT NULL,
    snapshot        BIGINT,
    recorded_at     TIMESTAMPTZ NOT NULL,
    result          JSON NOT NULL)"""
    )
    con.execute(
        """CREATE TABLE rounds (
    round_id        VARCHAR NOT NULL,
    number          INTEGER NOT NULL,
    state           VARCHAR NOT NULL,
    export_id       VARCHAR,
    run_id          VARCHAR,
    previous_run_id VARCHAR,
    comparison_id   VARCHAR,
    recorded_at     TIMESTAMPTZ NOT NULL,
    record          JSON NOT NULL)"""
    )
    con.execute(
        """CREATE TABLE promotions (
    promotion_id    VARCHAR NOT NULL,
    run_id          VARCHAR NOT NULL,
    promoted_by     VARCHAR NOT NULL,
    note            VARCHAR NOT NULL,
    override_reason VARCHAR,
    previous_run_id VARCHAR,
    promoted_at     TIMESTAMPTZ NOT NULL,
    evidence        JSON NOT NULL)"""
    )
