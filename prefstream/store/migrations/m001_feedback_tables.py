"""Raw feedback tables, dead letters and the Kafka offsets log (append-only).

Every row records where it came from: ``source`` is ``topic[partition]@offset`` for Kafka
or ``path:line`` for files. DuckLake has no unique constraints, so these tables may hold a
batch twice physically (a redelivery, a zombie consumer); the views of migration 2 show
each event once. Item keys are md5 hex digests: ``prompt_hash`` of the canonical prompt
JSON; ``item_id`` (thumbs) of prompt + response; ``pair_id`` (pairwise) of prompt + the
unordered pair of responses.
"""

_COMMON = """
    event_id        VARCHAR NOT NULL,
    schema_version  INTEGER NOT NULL,
    ts              TIMESTAMPTZ NOT NULL,
    prompt          JSON NOT NULL,
    prompt_hash     VARCHAR NOT NULL,
    annotator_id    VARCHAR NOT NULL,
    annotator_kind  VARCHAR NOT NULL,
    metadata        JSON NOT NULL,
"""

_SOURCE = """
    topic           VARCHAR,
    "partition"     INTEGER,
    "offset"        BIGINT,
    source          VARCHAR NOT NULL,
    ingested_at     TIMESTAMPTZ NOT NULL
"""


def migrate(con) -> None:
    con.execute("CREATE TABLE schema_migrations (version INTEGER NOT NULL, name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL)")
    con.execute(
        f"""CREATE TABLE thumbs_raw ({_COMMON}
    item_id         VARCHAR NOT NULL,
    response        VARCHAR NOT NULL,
    rating          VARCHAR NOT NULL,
    model_id        VARCHAR,
    {_SOURCE})"""
    )
    con.execute(
        f"""CREATE TABLE pairwise_raw ({_COMMON}
    pair_id         VARCHAR NOT NULL,
    response_a      VARCHAR NOT NULL,
    response_b      VARCHAR NOT NULL,
    choice          VARCHAR NOT NULL,
    shown_first     VARCHAR,
    model_a         VARCHAR,
    model_b         VARCHAR,
    {_SOURCE})"""
    )
    con.execute(
        """CREATE TABLE dead_letters_raw (
    source          VARCHAR NOT NULL,
    raw             BLOB,
    reason          VARCHAR NOT NULL,
    key             BLOB,
    topic           VARCHAR,
    "partition"     INTEGER,
    "offset"        BIGINT,
    received_at     TIMESTAMPTZ NOT NULL)"""
    )
    # One row per partition per landed batch; ``epoch`` grows on --reset-offsets, the only
    # way an offset may move backwards.
    con.execute(
        """CREATE TABLE offsets_log (
    group_id        VARCHAR NOT NULL,
    topic           VARCHAR NOT NULL,
    "partition"     INTEGER NOT NULL,
    next_offset     BIGINT NOT NULL,
    epoch           INTEGER NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL)"""
    )
