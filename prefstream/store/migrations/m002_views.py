"""The names users query: each event once, whatever was physically written twice.

See :mod:`prefstream.store.views` for the definitions (shared with windowed reads).
"""

from prefstream.store.views import VIEWS


def migrate(con) -> None:
    for name, sql in VIEWS.items():
        con.execute(f"CREATE VIEW {name} AS {sql}")
