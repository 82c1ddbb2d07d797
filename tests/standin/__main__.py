"""Run the Neo4j Enterprise STAND-IN (not Neo4j) as a process, e.g. to try `target: neo4j` with `dagster dev`:

    .venv/bin/python -m tests.standin --bolt-port 7687 --arrow-port 8491 --password s3cret

Prints one JSON line with the ports once both servers listen; stops on SIGTERM or Ctrl-C.

Across a restart (docs/testing.md, "The stand-in across a restart"): `--data-dir DIR` (or `STANDIN_DATA_DIR`)
keeps every committed change in DIR and starts from it; `--hold-at-batch N` (or `STANDIN_HOLD_AT_BATCH`) stops
answering loads once N data batches were taken and prints `{"held": N}`: the moment to kill the process.
"""

import argparse
import json
import os
import signal
import threading

from tests.standin.alias_log import record_alias_moves
from tests.standin.server import start_standin


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.standin", description=__doc__.splitlines()[0])
    parser.add_argument("--bolt-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--arrow-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--listen", default="127.0.0.1", help="address to bind (0.0.0.0 in a container)")
    parser.add_argument("--user", default="neo4j")
    parser.add_argument("--password", required=True)
    parser.add_argument("--accept-string-properties", action="store_true",
                        help="take string node properties over Arrow (the demo snapshot has them; pair with "
                             "neo4j.arrow_string_properties: true)")
    parser.add_argument("--alias-log", help="append every alias move to this file (tests/standin/alias_log.py)")
    parser.add_argument("--data-dir", default=os.environ.get("STANDIN_DATA_DIR") or None,
                        help="keep committed databases, aliases, users and privileges here across restarts "
                             "(tests/standin/persistence.py); default $STANDIN_DATA_DIR, else in memory only")
    parser.add_argument("--hold-at-batch", type=int, default=_int_env("STANDIN_HOLD_AT_BATCH"),
                        help="after this many data batches (Arrow DoPut batches, committed Cypher loader "
                             "batches) print {\"held\": N} and stop answering loads: a kill point; default "
                             "$STANDIN_HOLD_AT_BATCH")
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with start_standin(password=args.password, user=args.user, bolt_port=args.bolt_port,
                       arrow_port=args.arrow_port, listen=args.listen, data_dir=args.data_dir) as standin:
        standin.dbms.hold_at_batch = args.hold_at_batch
        standin.dbms.on_hold = lambda batches: print(json.dumps({"held": batches}), flush=True)
        if standin.arrow is not None:
            standin.arrow.accept_string_properties = args.accept_string_properties
        if args.alias_log:
            record_alias_moves(standin.dbms, args.alias_log, stop)
        print(json.dumps({"bolt_port": standin.bolt_port, "arrow_port": standin.arrow_port}), flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


if __name__ == "__main__":
    main()
