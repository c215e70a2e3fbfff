"""Options and output helpers shared by several commands (consistent flags, one place)."""

from __future__ import annotations

import sys
import time

import click

db_option = click.option(
    "--db",
    "db_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="DuckDB file (created and migrated if needed).",
)
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
