"""A code location for tests/test_dead_run.py: bluegreen's own definitions plus `hold_customer`, a job that
occupies its customer's run slot until the test releases it (or kills it).

The worker writes its pid to $BLUEGREEN_TEST_HOLD_DIR/<run_id>.pid so the test knows which process to kill."""


import os
import time
from pathlib import Path

import dagster as dg

from bluegreen_dagster.definitions import build_definitions
from bluegreen_dagster.resources import load_resources


@dg.op
def hold(context: dg.OpExecutionContext) -> None:
    folder = Path(os.environ["BLUEGREEN_TEST_HOLD_DIR"])
    (folder / f"{context.run_id}.pid").write_text(str(os.getpid()))
    release = folder / f"{context.run_id}.release"
    deadline = time.monotonic() + 300
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.2)


# In-process so that the op's pid is the run worker's pid.
@dg.job(executor_def=dg.in_process_executor)
def hold_customer() -> None:
    hold()


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(build_definitions(load_resources()), dg.Definitions(jobs=[hold_customer]))
