"""Numbered schema migrations: ``mNNN_name.py`` modules, each with ``migrate(con)``.

Add a new file with the next number; never edit one that has shipped.
"""
