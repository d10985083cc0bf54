"""Build the Rucio schema and the root account once; a no-op when they exist.

Run with the Rucio server's own Python and ``RUCIO_CONFIG`` set (scripts/services/rucio does).
"""

from rucio.db.sqla.session import get_engine
from rucio.db.sqla.util import build_database, create_base_vo, create_root_account
from sqlalchemy import inspect, text


def main():
    engine = get_engine()
    if "accounts" not in inspect(engine).get_table_names():
        build_database()
    with engine.connect() as conn:
        has_vo = conn.execute(text("SELECT count(*) FROM vos")).scalar()
        has_root = conn.execute(text("SELECT count(*) FROM accounts WHERE account = 'root'")).scalar()
    if not has_vo:
        create_base_vo()
    if not has_root:
        create_root_account()


if __name__ == "__main__":
    main()
