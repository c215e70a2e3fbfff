"""Aggregation, pairing, splits, exporters (KTO / DPO / IPO / SimPO / ORPO) and lineage manifests.

\b
    from prefstream.prep import ExportSettings, Output, export
    from prefstream.store import open_store
    with open_store("feedback", create=False) as store:
        manifest = export(store, ExportSettings(kind="dpo", balance_length=True), Output(out=Path("dpo-set")))

The output is a ``datasets.DatasetDict`` (``train`` / ``test``) in TRL's columns, or one
parquet / jsonl file per split, plus ``manifest.json``; see :mod:`prefstream.prep.export`.
"""

from prefstream.prep.export import export
from prefstream.prep.kto_weights import recommended_weights
from prefstream.prep.settings import ExportSettings, Output

__all__ = ["ExportSettings", "Output", "export", "recommended_weights"]
