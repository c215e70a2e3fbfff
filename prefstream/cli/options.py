"""Options and output helpers shared by several commands (consistent flags, one place)."""

from __future__ import annotations

import sys
import time

import click

from prefstream.config import section



def store_options(fn):
    """``--store`` and ``--data-path``, shared by every command that reads or writes the store."""
    fn = click.option(
        "--data-path",
        metavar="DIR|URL",
        default=None,
        help="Where a catalog store keeps its Parquet files (a directory or an object-store URL); env PREFSTREAM_DATA_PATH.",
    )(fn)
    return click.option(
        "--store",
        "store",
        metavar="DIR|URL",
        default=None,
        help="The store: a directory (created on first use) or a ducklake:postgres:... catalog URL; "
        "env PREFSTREAM_STORE, or [store] store = ... in the config file.",
    )(fn)


snapshot_option = click.option(
    "--snapshot",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Read the store as of snapshot N (reports and manifests record theirs); default: the current one.",
)


def open_cli_store(config: dict | None, store: str | None, data_path: str | None, *, create: bool = False):
    """The store named by the flags, the environment or the config file, opened and migrated."""
    from prefstream.store import StoreLocation, open_store

    location = StoreLocation.resolve(store, data_path, config)
    return open_store(location, create=create, memory_limit=section(config or {}, "store").get("memory_limit"))

quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress line; only the summary.")


class Progress:
    """A single self-overwriting status line on a terminal, at most a few times a second."""

    def __init__(self, enabled: bool, every: float = 0.5):
        self.enabled = enabled and sys.stderr.isatty()
        self.every = every
        self._last = 0.0

    def show(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (force or now - self._last >= self.every):
            self._last = now
            click.echo(f"\r\033[K{text}", err=True, nl=False)

    def done(self) -> None:
        if self.enabled and self._last:
            click.echo("\r\033[K", err=True, nl=False)


def summary_line(counts, seconds: float) -> str:
    """The one-line summary every landing command prints at exit."""
    rate = counts.seen / seconds if seconds > 0 else 0.0
    return (
        f"landed {counts.landed} (thumbs {counts.thumbs}, pairwise {counts.pairwise}), "
        f"dead letters {counts.dead_letters}, duplicates {counts.duplicates}, "
        f"already landed {counts.replayed}; {counts.seen} messages in {seconds:.1f}s ({rate:,.0f} events/s)"
    )


def dead_letter_lines(counts, top: int = 3) -> list[str]:
    """The most common dead-letter reasons, one line each."""
    ranked = sorted(counts.dead_reasons.items(), key=lambda kv: -kv[1])[:top]
    return [f"  dead letter x{n}: {reason}" for reason, n in ranked]
