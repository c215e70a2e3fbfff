"""prefstream: production LLM feedback -> audited preference sets -> DPO / IPO / KTO runs.

The package root holds what every stage shares: errors, configuration and the DuckDB
store. Stages live in subpackages (``prefstream.ingest``, ``.quality``, ``.prep``,
``.train``); the CLI (``prefstream.cli``) sits on top and is never imported from here.
"""

__version__ = "0.1.0"
