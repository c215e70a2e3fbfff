"""``python -m prefstream.cli`` runs the CLI (tests use it to run a child process)."""

from prefstream.cli import main

main()
