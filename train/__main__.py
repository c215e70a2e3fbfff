"""``python -m prefstream.train dpo ...`` = ``prefstream train dpo ...``; the entry point for torchrun."""

import sys

from prefstream.cli import main

main(["train", *sys.argv[1:]], prog_name="prefstream")
