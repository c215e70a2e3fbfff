"""Aggregation, pairing, splits, exporters (KTO / DPO / IPO) and lineage manifests.

\b
    from prefstream.prep import ExportSettings, Output, export
    manifest = export(con, ExportSettings(kind="dpo", balance_length=True), Output(out=Path("dpo-set")))

The output is a ``datasets.DatasetDict`` (``train`` / ``test``) in TRL's columns, or one
parquet / jsonl file per split, plus ``manifest.json``; see :mod:`prefstream.prep.export`.
"""

from prefstream.prep.export import export
from prefstream.prep.kto_weights import recommended_weights
from prefstream.prep.settings import ExportSettings, Output

__all__ = ["ExportSettings", "Output", "export", "recommended_weights"]
