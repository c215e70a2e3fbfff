"""The audit's reads: one scan of the window into compact temp tables, then aggregates.

Why SQL and not frames: at tens of millions of events the raw rows (prompts, responses,
ids) do not fit in Python, and every statistic here needs only tallies. So the window is
read once, from the raw tables with the ts filter first (DuckLake prunes files on it, and
the work follows the window, not the store), into TEMP tables of fixed-width columns:
item hash, annotator, label code, order shown, length difference, day, model. Every
figure is then a GROUP BY over those; what reaches Python is per item *pattern*, per
annotator, per day or per length difference, never per event.

Labels: thumbs ``down`` = 0, ``up`` = 1; pairwise ``r1`` = 0, ``r2`` = 1, ``tie`` = 2, where
r1 is the response with the smaller DuckDB ``hash`` of its text, so annotators shown the
pair as (a, b) and as (b, a) are compared on the same footing and neither label is tied to
how responses start. The hash is stable for one DuckDB version, which is all agreement
within one audit needs.

Events are deduplicated by ``event_id`` (copies of one event carry the same content), and
"current" is the latest judgement per annotator and item with ts in the window — the same
as the store's ``*_current`` as of the window's end, then restricted to ts >= since; ties
on ts are broken by the event id's hash.
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import polars as pl

from prefstream.quality import expectations as ex

KINDS = ("thumbs", "pairwise")
LABELS = {"thumbs": ("down", "up"), "pairwise": ("r1", "r2", "tie")}
_ITEM = {"thumbs": "item_id", "pairwise": "pair_id"}

_THUMBS = """
    CASE rating WHEN 'down' THEN 0 WHEN 'up' THEN 1 END::UTINYINT AS label,
    CASE WHEN rating NOT IN ('up', 'down') THEN rating END AS odd,
    model_id AS model"""

_PAIRWISE = """
    CASE WHEN choice = 'tie' THEN 2 WHEN choice NOT IN ('a', 'b') THEN NULL
         WHEN (choice = 'a') = a_is_r1 THEN 0 ELSE 1 END::UTINYINT AS label,
    CASE WHEN choice NOT IN ('a', 'b', 'tie') THEN choice END AS odd,
    CASE WHEN shown_first IS NULL OR shown_first NOT IN ('a', 'b') THEN 0 WHEN (shown_first = 'a') = a_is_r1 THEN 1 ELSE -1 END::TINYINT AS r1_first,
    (CASE WHEN a_is_r1 THEN length(response_a) - length(response_b) ELSE length(response_b) - length(response_a) END)::INTEGER AS delta"""


def plausible_sql(settings) -> str:
    """SQL condition on a feedback row: its ts is plausible (not before ``earliest_ts``, not more
    than ``max_future_hours`` after the store received it). Exports use the same condition."""
    earliest = settings.earliest().isoformat()
    return f"(ts >= TIMESTAMPTZ '{earliest}' AND ts <= ingested_at + to_microseconds({int(settings.max_future_hours * 3600e6)}))"


class Window:
    """The window [since, until) of one store connection, staged into temp tables ``qa_raw_<kind>``
    (every row, with its plausibility and expectation bits) and ``qa_<kind>`` (current
    plausible judgements). Methods return small aggregates."""

    def __init__(self, con: duckdb.DuckDBPyConnection, since: datetime | None, until: datetime | None, settings):
        self.con = con
        # Bounds as literals, not parameters: a prepared filter defeats DuckDB's pushdown (~1 s per 100k rows).
        bounds = [f"ts >= TIMESTAMPTZ '{since.isoformat()}'" if since else None, f"ts < TIMESTAMPTZ '{until.isoformat()}'" if until else None]
        self.where = " AND ".join(b for b in bounds if b) or "TRUE"
        self.settings = settings
        self.columns: dict[str, list[str]] = {}
        for kind in KINDS:
            self._stage(kind)

    def _stage(self, kind: str) -> None:
        raw = f"{kind}_raw"
        self.columns[kind] = [r[0] for r in self.con.execute(f"DESCRIBE {raw}").fetchall()]
        if kind == "thumbs":
            inner, fields = "", ["label", "odd", "model"]
            extra = _THUMBS
        else:
            inner, fields = ", hash(response_a) <= hash(response_b) AS a_is_r1", ["label", "odd", "r1_first", "delta"]
            extra = _PAIRWISE
        self.con.execute(f"DROP TABLE IF EXISTS temp.qa_raw_{kind}")
        # Every row of the window, copies of one event included (they share ``eid``): dropping
        # them here would cost a second pass, and only the event counts need it (see events()).
        self.con.execute(
            f"""CREATE TEMP TABLE qa_raw_{kind} AS
            SELECT eid, item, annotator_id, human, ts, day, plausible, bad, src, {extra}
            FROM (SELECT *, hash(event_id) AS eid, hash({_ITEM[kind]}) AS item, annotator_kind IS DISTINCT FROM 'model' AS human,
                         (epoch_us(ts) // 86400000000)::INTEGER AS day, {plausible_sql(self.settings)} AS plausible,
                         ({ex.bits_sql(kind)})::INTEGER AS bad, hash(source) AS src {inner}
                  FROM {raw} WHERE {self.where})"""
        )
        self.con.execute(f"DROP TABLE IF EXISTS temp.qa_{kind}")
        self.con.execute(
            f"""CREATE TEMP TABLE qa_{kind} AS SELECT item, annotator_id, human, ts, day, {', '.join(fields)} FROM qa_raw_{kind} WHERE plausible
            QUALIFY row_number() OVER (PARTITION BY annotator_id, item ORDER BY ts DESC, eid DESC) = 1"""
        )

    def rows(self, sql: str, params=None) -> list[tuple]:
        return self.con.execute(sql, params or []).fetchall()

    def frame(self, sql: str, params=None) -> pl.DataFrame:
        return self.con.execute(sql, params or []).pl()

    # --- counts and hygiene -----------------------------------------------------------

    def counts(self, kind: str) -> dict:
        n, items, annotators, odd = self.rows(
            f"SELECT count(label), count(DISTINCT item), count(DISTINCT annotator_id), count(odd) FROM qa_{kind}"
        )[0]
        seen = [r[0] for r in self.rows(f"SELECT DISTINCT odd FROM qa_{kind} WHERE odd IS NOT NULL ORDER BY 1 LIMIT 5")]
        return {"annotations": n, "items": items, "annotators": annotators, "unexpected_labels": odd, "unexpected_values": seen}

    def timestamps(self, kind: str) -> dict:
        implausible, too_early = self.rows(
            f"SELECT count(DISTINCT eid) FILTER (NOT plausible), count(DISTINCT eid) FILTER (NOT plausible AND ts < ?) FROM qa_raw_{kind}",
            [self.settings.earliest()],
        )[0]
        examples = []
        if implausible:
            examples = [
                {"event_id": e, "ts": t.isoformat(), "ingested_at": i.isoformat()}
                for e, t, i in self.rows(
                    f"SELECT DISTINCT event_id, ts, ingested_at FROM {kind}_raw WHERE {self.where} AND NOT {plausible_sql(self.settings)} ORDER BY ts LIMIT 3"
                )
            ]
        return {"implausible": implausible, "too_early": too_early, "too_late": implausible - too_early, "examples": examples}

    def events(self, kind: str) -> dict:
        """One pass over the staged rows grouped by event (copies of one event counted once):
        the repeats (events, current labels, exact content duplicates under another event id,
        producer retries = events that arrived at more than one source, contradictions =
        (annotator, item, ts) groups with different labels) and the expectation tallies."""
        n_bits = sum(1 for e in ex.suite(kind) if e.unexpected)
        tallies = ", ".join(f"count(*) FILTER (bad & {1 << i} <> 0)" for i in range(n_bits))
        row = self.rows(
            f"""WITH e AS (SELECT eid, any_value(annotator_id) AS a, any_value(item) AS i, any_value(ts) AS t, any_value(label) AS l,
                                  bool_and(plausible) AS plausible, bit_or(bad) AS bad, min(src) <> max(src) AS retried,
                                  min(hash(item, annotator_id, ts, label)) <> max(hash(item, annotator_id, ts, label)) AS reused
                           FROM qa_raw_{kind} GROUP BY eid),
                 g AS (SELECT a, i, t, l, count(*) AS c FROM e WHERE plausible GROUP BY ALL)
            SELECT (SELECT count(*) FILTER (plausible) FROM e), (SELECT count(*) FILTER (plausible AND retried) FROM e),
                   (SELECT count(label) FROM qa_{kind}), (SELECT coalesce(sum(c - 1), 0) FROM g),
                   (SELECT count(*) FROM (SELECT 1 FROM g GROUP BY a, i, t HAVING count(*) > 1)),
                   count(*), count(*) FILTER (reused), {tallies}
            FROM e"""
        )[0]
        row = [int(v) for v in row]
        repeats = dict(zip(("events", "retries", "current", "content_duplicates", "contradictions"), row[:5]))
        # An event id is unique in the table users query by construction; "unexpected" are ids
        # that arrived with two different contents (one of them is hidden).
        return {"repeats": repeats, "rows": row[5], "expectations": ex.summarise(kind, self.columns[kind], row[5], row[7:], row[6])}

    def dead_letters(self) -> int:
        return self.rows(f"SELECT count(*) FROM dead_letters WHERE {self.where.replace('ts ', 'received_at ')}")[0][0]

    # --- agreement ----------------------------------------------------------------------

    def patterns(self, kind: str, where: str = "TRUE") -> pl.DataFrame:
        """Per item label counts ``c0, c1[, c2]`` grouped into patterns with their multiplicity ``m``."""
        k = len(LABELS[kind])
        cols = ", ".join(f"count(*) FILTER (label = {v}) AS c{v}" for v in range(k))
        return self.frame(
            f"""SELECT {', '.join(f'c{v}' for v in range(k))}, count(*) AS m FROM (
                    SELECT {cols} FROM qa_{kind} WHERE label IS NOT NULL AND {where} GROUP BY item)
                GROUP BY ALL ORDER BY ALL"""
        )

    def pair_confusion(self, kind: str, a: str, b: str) -> list[tuple]:
        """(label of a, label of b, items) over the items both labelled."""
        return self.rows(
            f"""SELECT la, lb, count(*) FROM (
                    SELECT max(label) FILTER (annotator_id = ?) AS la, max(label) FILTER (annotator_id = ?) AS lb
                    FROM qa_{kind} WHERE label IS NOT NULL AND annotator_id IN (?, ?) GROUP BY item)
                WHERE la IS NOT NULL AND lb IS NOT NULL GROUP BY ALL""",
            [a, b, a, b],
        )

    def human_model_confusion(self, kind: str) -> list[tuple]:
        """(human majority label, model majority label, items) over items both kinds of judge
        labelled with a clear majority each (a tie between labels is no verdict)."""
        return self.rows(
            f"""WITH c AS (SELECT item, human, label, count(*) AS n FROM qa_{kind} WHERE label IS NOT NULL GROUP BY ALL),
            top AS (SELECT item, human, max(n) AS mx FROM c GROUP BY ALL),
            verdict AS (SELECT c.item, c.human, any_value(c.label) AS label FROM c JOIN top USING (item, human)
                        WHERE c.n = top.mx GROUP BY c.item, c.human HAVING count(*) = 1)
            SELECT h.label, m.label, count(*) FROM verdict h JOIN verdict m ON h.item = m.item AND h.human AND NOT m.human GROUP BY ALL"""
        )

    # --- annotators ---------------------------------------------------------------------

    def volumes(self, kind: str) -> pl.DataFrame:
        """Per annotator: ``human``, labels ``n`` and ``n_overlap`` (on items somebody else labelled too)."""
        return self.frame(
            f"""SELECT annotator_id, bool_and(human) AS human, count(*) AS n, count(*) FILTER (item_n >= 2) AS n_overlap
                FROM (SELECT annotator_id, human, count(*) OVER (PARTITION BY item) AS item_n FROM qa_{kind} WHERE label IS NOT NULL)
                GROUP BY annotator_id"""
        )

    def overlap_patterns(self, kind: str, decided: bool) -> pl.DataFrame:
        """Items with two or more labels as long rows (item_id = pattern index, annotator_id, label,
        weight = how many items share the pattern): identical items are grouped, so EM and
        the leave-one-out consensus run over patterns, not items. An item's pattern is the sum
        of 64-bit hashes of its (annotator, label) pairs (a set hash: exact up to collisions of
        probability ~2^-64), and one item stands for all of its pattern."""
        where = "label IN (0, 1)" if decided else "label IS NOT NULL"
        return self.frame(
            f"""WITH p AS (
                    SELECT min(item) AS rep, count(*)::DOUBLE AS weight FROM (
                        SELECT item, sum(hash(annotator_id, label)) AS pattern FROM qa_{kind} WHERE {where} GROUP BY item HAVING count(*) >= 2)
                    GROUP BY pattern)
                SELECT dense_rank() OVER (ORDER BY p.rep)::UINTEGER AS item_id, q.annotator_id, q.label::BIGINT AS label, p.weight
                FROM p JOIN qa_{kind} q ON q.item = p.rep WHERE q.{where}
                ORDER BY item_id, annotator_id"""
        )

    def position_by_annotator(self) -> pl.DataFrame:
        return self.frame(
            """SELECT annotator_id, count(*) AS n, count(*) FILTER ((label = 0) = (r1_first = 1)) AS first
               FROM qa_pairwise WHERE label IN (0, 1) AND r1_first <> 0 GROUP BY annotator_id"""
        )

    def up_by_annotator(self) -> pl.DataFrame:
        return self.frame("SELECT annotator_id, count(*) AS n, count(*) FILTER (label = 1) AS first FROM qa_thumbs WHERE label IS NOT NULL GROUP BY annotator_id")

    # --- bias ---------------------------------------------------------------------------

    def position_totals(self) -> tuple[int, int, int]:
        return self.rows(
            """SELECT count(*) FILTER (label IN (0, 1) AND r1_first <> 0),
                      count(*) FILTER (label IN (0, 1) AND r1_first <> 0 AND (label = 0) = (r1_first = 1)),
                      count(*) FILTER (r1_first = 0)
               FROM qa_pairwise"""
        )[0]

    def label_totals(self) -> tuple[int, int]:
        return self.rows("SELECT count(*) FILTER (label = 1), count(*) FILTER (label = 0) FROM qa_thumbs")[0]

    def length_groups(self, log_confusion: pl.DataFrame | None, log_prior: tuple[float, float], unreliable: list[str]) -> pl.DataFrame:
        """Decided judgements grouped by (delta, r1_first, consensus, others, trusted) with ``n`` and
        ``k``, all read from one response of the pair, "first" (r1 or r2, by item): delta is its
        length minus the other's, r1_first +1 when it was shown first, k how often it was chosen.
        ``consensus`` is +1 / -1 when the other annotators' labels, weighted by their Dawid-Skene
        confusion (``log_confusion``: annotator_id, label, e0, e1 = log P(label | truth r1 / r2)),
        make it the better / worse response with posterior >= 0.95, else 0."""
        self.con.register("qa_unreliable", pl.DataFrame({"annotator_id": unreliable}, schema={"annotator_id": pl.String}).to_arrow())
        if log_confusion is None:
            log_confusion = pl.DataFrame(schema={"annotator_id": pl.String, "label": pl.Int64, "e0": pl.Float64, "e1": pl.Float64})
        self.con.register("qa_log_confusion", log_confusion.to_arrow())
        # Each item is read in an orientation of its own (r1 or r2 first, by a hash of the item):
        # in a fixed orientation the verdict term can take one sign only (when the confusion
        # matrices are asymmetric) and would be collinear with the intercept.
        try:
            return self.frame(
                """WITH d AS (
                    SELECT q.item, q.annotator_id, q.label, q.delta, q.r1_first, coalesce(e.e0, 0) AS e0, coalesce(e.e1, 0) AS e1,
                           hash(q.item, 'orientation') % 2 = 1 AS flip
                    FROM qa_pairwise q LEFT JOIN qa_log_confusion e ON e.annotator_id = q.annotator_id AND e.label = q.label
                    WHERE q.label IN (0, 1)),
                t AS (SELECT *, sum(e0) OVER w - e0 + ? AS o0, sum(e1) OVER w - e1 + ? AS o1, count(*) OVER w AS m FROM d WINDOW w AS (PARTITION BY item)),
                v AS (SELECT *, CASE WHEN m >= 2 AND o0 - o1 >= ln(19) THEN 1 WHEN m >= 2 AND o1 - o0 >= ln(19) THEN -1 ELSE 0 END AS verdict FROM t)
                SELECT CASE WHEN flip THEN -delta ELSE delta END AS delta, (CASE WHEN flip THEN -r1_first ELSE r1_first END)::TINYINT AS r1_first,
                       (CASE WHEN flip THEN -verdict ELSE verdict END)::TINYINT AS consensus,
                       m >= 2 AS others, annotator_id NOT IN (SELECT annotator_id FROM qa_unreliable) AS trusted,
                       count(*) AS n, count(*) FILTER ((label = 0) <> flip) AS k
                FROM v GROUP BY ALL ORDER BY ALL""",
                list(log_prior),
            )
        finally:
            self.con.unregister("qa_unreliable")
            self.con.unregister("qa_log_confusion")

    def drift_tables(self) -> dict[str, list[dict]]:
        def rows(sql: str) -> list[dict]:
            return [{"group": str(g), "n": n, "k": k} for g, n, k in self.rows(sql)]

        day = "DATE '1970-01-01' + day"
        return {
            "thumbs_by_day": rows(f"SELECT {day}, count(*), count(*) FILTER (label = 1) FROM qa_thumbs WHERE label IS NOT NULL GROUP BY day ORDER BY day"),
            "thumbs_by_model": rows("SELECT coalesce(model, '(none)'), count(*), count(*) FILTER (label = 1) FROM qa_thumbs WHERE label IS NOT NULL GROUP BY 1 ORDER BY 1"),
            "pairwise_by_day": rows(f"SELECT {day}, count(*), count(*) FILTER (label = 2) FROM qa_pairwise WHERE label IS NOT NULL GROUP BY day ORDER BY day"),
            "pairwise_by_day_first_shown": rows(
                f"SELECT {day}, count(*), count(*) FILTER ((label = 0) = (r1_first = 1)) FROM qa_pairwise WHERE label IN (0, 1) AND r1_first <> 0 GROUP BY day ORDER BY day"
            ),
        }

    def close(self) -> None:
        for kind in KINDS:
            for table in (f"qa_raw_{kind}", f"qa_{kind}"):
                self.con.execute(f"DROP TABLE IF EXISTS temp.{table}")

