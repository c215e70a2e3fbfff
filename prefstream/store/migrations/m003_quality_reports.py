"""Quality reports: one row per ``prefstream audit`` run, cited by exports through ``report_id``.

The whole report is kept as JSON; ``passed`` and the audited window are columns so a
query can find "the latest passing report for this window" without parsing JSON.
"""


def migrate(con) -> None:
    con.execute(
        """CREATE TABLE quality_reports (
    report_id       VARCHAR PRIMARY KEY,
    created_at      TIMESTAMPTZ NOT NULL,
    since           TIMESTAMPTZ,
    "until"         TIMESTAMPTZ,
    passed          BOOLEAN NOT NULL,
    report          JSON NOT NULL)"""
    )
