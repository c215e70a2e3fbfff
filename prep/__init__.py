"""Aggregation, pairing, splits, exporters (KTO / DPO / IPO) and lineage manifests.

\b
    from prefstream.prep import ExportSettings, Output, export
    manifest = export(con, ExportSettings(kind="dpo", balance_length=True), Output(out=Path("dpo-set")))
"""

from prefstream.prep.export import ExportSettings, Output, export
from prefstream.prep.kto_weights import recommended_weights

__all__ = ["ExportSettings", "Output", "export", "recommended_weights"]
