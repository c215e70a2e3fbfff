"""Aggregation, pairing, splits, exporters (KTO / DPO / IPO) and lineage manifests."""
