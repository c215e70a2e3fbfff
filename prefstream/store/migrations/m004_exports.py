"""Exports: one row per ``prefstream export``, so a model's training set can be traced back.

The manifest (also written beside the data as ``manifest.json``) is kept whole as JSON;
the columns answer the common questions without parsing it: which snapshot it read, which
report gated it, was the gate overridden, what content, where.
"""


def migrate(con) -> None:
    con.execute(
        """CREATE TABLE exports (
    export_id       VARCHAR NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    kind            VARCHAR NOT NULL,
    out_path        VARCHAR NOT NULL,
    content_hash    VARCHAR NOT NULL,
    snapshot        BIGINT NOT NULL,
    report_id       VARCHAR,
    gate_passed     BOOLEAN,
    forced          BOOLEAN NOT NULL,
    manifest        JSON NOT NULL)"""
    )
