"""What the benchmarks share: their own database, emptied, and a server's port to wait for."""

from __future__ import annotations

import socket
import sys
import time

import psycopg

# Every table the benchmarks seed, emptied at once (and, by CASCADE, whatever else points to them).
EMPTY = (
    "TRUNCATE scoring_slotoffer, scoring_waitlistentry, scoring_customerscore, scoring_appointment, scoring_customer, "
    "scoring_shop, scoring_customerchange, scoring_dirtycustomer, scoring_scoringstate, scoring_scorechange, "
    "scoring_bookingpolicy, scoring_evaluation, scoring_adjustment, jobs_jobrun, jobs_joblease CASCADE"
)


def create_database(url: str) -> None:
    """Create the database `url` names if it does not exist (connecting to the server's `postgres` database)."""
    name = url.rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            admin.execute(f'CREATE DATABASE "{name}"')


def wait_for(port: int) -> None:
    """Until a server listens on the loopback `port` (10 s at most: then exit)."""
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit("the server did not start")
