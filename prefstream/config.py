"""The configuration file: one TOML file, one table per stage.

\b
    [ingest]
    max_bytes = 1048576
    [ingest.consumer]            # any kafka-python KafkaConsumer setting, SASL/SSL included
    security_protocol = "SASL_SSL"
    sasl_mechanism = "PLAIN"
    [quality.gate]               # thresholds, see prefstream.quality
    min_alpha = 0.4

Pass it with ``prefstream --config FILE <command>`` or the ``PREFSTREAM_CONFIG`` variable.
Command-line flags win over the file.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from prefstream.errors import PrefstreamError

ENV_VAR = "PREFSTREAM_CONFIG"


def load_config(path: str | Path | None = None) -> dict[str, Any]:
    """Read the config file at ``path`` (or ``$PREFSTREAM_CONFIG``); ``{}`` when there is none."""
    path = path or os.environ.get(ENV_VAR)
    if not path:
        return {}
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise PrefstreamError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise PrefstreamError(f"config file {path} is not valid TOML: {exc}") from None


def section(config: dict[str, Any], dotted: str) -> dict[str, Any]:
    """The table at ``dotted`` (e.g. ``"ingest.consumer"``), ``{}`` if absent."""
    node: Any = config
    for part in dotted.split("."):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    if not isinstance(node, dict):
        raise PrefstreamError(f"config key [{dotted}] must be a table")
    return node
