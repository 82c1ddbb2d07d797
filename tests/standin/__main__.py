"""Run the Neo4j Enterprise STAND-IN (not Neo4j) as a process, e.g. to try `target: neo4j` with `dagster dev`:

    .venv/bin/python -m tests.standin --bolt-port 7687 --arrow-port 8491 --password s3cret

Prints one JSON line with the ports once both servers listen; stops on SIGTERM or Ctrl-C.
"""

import argparse
import json
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
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with start_standin(password=args.password, user=args.user, bolt_port=args.bolt_port,
                       arrow_port=args.arrow_port, listen=args.listen) as standin:
        if standin.arrow is not None:
            standin.arrow.accept_string_properties = args.accept_string_properties
        if args.alias_log:
            record_alias_moves(standin.dbms, args.alias_log, stop)
        print(json.dumps({"bolt_port": standin.bolt_port, "arrow_port": standin.arrow_port}), flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
