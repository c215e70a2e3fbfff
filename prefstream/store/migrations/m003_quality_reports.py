"""Quality reports: one row per ``prefstream audit`` run, cited by exports through ``report_id``.

The whole report is kept as JSON; ``passed``, the audited window and the ``snapshot`` it
read are columns so a query can find "the latest report for this window and snapshot"
without parsing JSON.
"""


def migrate(con) -> None:
    con.execute(
        """CREATE TABLE quality_reports (
    report_id       VARCHAR NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    since           TIMESTAMPTZ,
    "until"         TIMESTAMPTZ,
    snapshot        BIGINT NOT NULL,
    passed          BOOLEAN NOT NULL,
    report          JSON NOT NULL)"""
    )
