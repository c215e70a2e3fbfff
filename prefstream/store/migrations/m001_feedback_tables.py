"""Raw feedback tables, dead letters, duplicates and Kafka offsets.

Every row records where it came from: ``source`` is ``topic[partition]@offset`` for Kafka
or ``path:line`` for files, and is the key that makes re-delivery and re-runs idempotent.
Item keys are md5 hex digests computed by DuckDB at landing: ``prompt_hash`` of the
canonical prompt JSON; ``item_id`` (thumbs) of prompt + response; ``pair_id`` (pairwise)
of prompt + the unordered pair of responses.
"""

_COMMON = """
    event_id        VARCHAR PRIMARY KEY,
    schema_version  INTEGER NOT NULL,
    ts              TIMESTAMPTZ NOT NULL,
    prompt          JSON NOT NULL,
    prompt_hash     VARCHAR NOT NULL,
    annotator_id    VARCHAR NOT NULL,
    annotator_kind  VARCHAR NOT NULL CHECK (annotator_kind IN ('user', 'expert')),
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
    con.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
    )
    con.execute(
        f"""CREATE TABLE thumbs ({_COMMON}
    item_id         VARCHAR NOT NULL,
    response        VARCHAR NOT NULL,
    rating          VARCHAR NOT NULL CHECK (rating IN ('up', 'down')),
    model_id        VARCHAR,
    {_SOURCE})"""
    )
    con.execute(
        f"""CREATE TABLE pairwise ({_COMMON}
    pair_id         VARCHAR NOT NULL,
    response_a      VARCHAR NOT NULL,
    response_b      VARCHAR NOT NULL,
    choice          VARCHAR NOT NULL CHECK (choice IN ('a', 'b', 'tie')),
    shown_first     VARCHAR CHECK (shown_first IN ('a', 'b')),
    model_a         VARCHAR,
    model_b         VARCHAR,
    {_SOURCE})"""
    )
    con.execute(
        """CREATE TABLE dead_letters (
    source          VARCHAR PRIMARY KEY,
    raw             BLOB,
    reason          VARCHAR NOT NULL,
    key             BLOB,
    topic           VARCHAR,
    "partition"     INTEGER,
    "offset"        BIGINT,
    received_at     TIMESTAMPTZ NOT NULL)"""
    )
    con.execute(
        """CREATE TABLE duplicates (
    source          VARCHAR PRIMARY KEY,
    event_id        VARCHAR NOT NULL,
    kind            VARCHAR NOT NULL,
    first_source    VARCHAR NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL)"""
    )
    con.execute(
        """CREATE TABLE kafka_offsets (
    group_id        VARCHAR NOT NULL,
    topic           VARCHAR NOT NULL,
    "partition"     INTEGER NOT NULL,
    next_offset     BIGINT NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (group_id, topic, "partition"))"""
    )
