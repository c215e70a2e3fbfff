"""Views of the current feedback: for each annotator and item, the event with the latest ts.

Ties on ``ts`` are broken by ``event_id`` so the view is deterministic. ``pairwise_current``
adds ``chosen`` / ``rejected`` (NULL for ties) and ``first_shown_chosen`` (NULL when the
event has no ``shown_first`` or is a tie).
"""


def migrate(con) -> None:
    con.execute(
        """CREATE VIEW thumbs_current AS
SELECT * FROM thumbs
QUALIFY row_number() OVER (PARTITION BY annotator_id, item_id ORDER BY ts DESC, event_id DESC) = 1"""
    )
    con.execute(
        """CREATE VIEW pairwise_current AS
SELECT *,
    CASE choice WHEN 'a' THEN response_a WHEN 'b' THEN response_b END AS chosen,
    CASE choice WHEN 'a' THEN response_b WHEN 'b' THEN response_a END AS rejected,
    CASE WHEN choice = 'tie' OR shown_first IS NULL THEN NULL ELSE choice = shown_first END AS first_shown_chosen
FROM pairwise
QUALIFY row_number() OVER (PARTITION BY annotator_id, pair_id ORDER BY ts DESC, event_id DESC) = 1"""
    )
