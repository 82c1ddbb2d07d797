"""Mutation testing of the safety-critical modules with mutmut (configured in pyproject.toml, [tool.mutmut]).

    .venv/bin/pip install "mutmut==3.*"
    .venv/bin/python benchmarks/mutation.py                       # every module below
    .venv/bin/python benchmarks/mutation.py plausibility secrets  # some of them
    .venv/bin/python benchmarks/mutation.py --report-only         # the counts an earlier run left in mutants/

Not part of CI: it takes tens of minutes. mutmut copies the package into mutants/, changes one thing at a time
(a comparison, a constant, a call's argument...) and runs, for each mutant, only the tests that called the mutated
function in a first unmutated run (the test selection is `pytest_add_cli_args_test_selection`: the fast tests of
these modules; the PostgreSQL variants and the five-process race are left out). A mutant no test notices
("survived") is a change of behaviour nothing protects, or an equivalent change (docs/mutation.md lists them).

Prints ONE JSON object: per module {killed, survived, timeout, no_tests, other, not_checked, score}, where
score = killed / (all mutants that were checked), and the total. The `mutants/` folder keeps mutmut's state: `mutmut show NAME`
prints a mutant's diff, `mutmut results` the survivors.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ["bluegreen", "plausibility", "snapshots", "folders", "names", "fingerprints", "concurrency", "secrets",
           "smoke", "value_stats", "fence"]
MUTMUT = Path(sys.executable).parent / "mutmut"
# `mutmut results --all true` prints "    bluegreen_dagster.plausibility.x_check__mutmut_3: killed"
RESULT = re.compile(r"^\s*bluegreen_dagster\.(\w+)\.\S+: (.+)$")


def run(modules: list[str], *, mutate: bool = True) -> dict:
    if mutate:
        globs = [f"bluegreen_dagster.{m}.*" for m in modules]
        subprocess.run([str(MUTMUT), "run", *globs], cwd=ROOT, check=False, stdout=sys.stderr,  # progress
                       env=mutated_env())
    shown = subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout
    per: dict[str, Counter] = {m: Counter() for m in modules}
    for line in shown.splitlines():
        match = RESULT.match(line)
        if match and match.group(1) in per:
            status = match.group(2).strip().replace(" ", "_")
            known = ("killed", "survived", "timeout", "no_tests", "not_checked")
            per[match.group(1)][status if status in known else "other"] += 1
    out = {m: _score(c) for m, c in per.items()}
    out["total"] = _score(sum(per.values(), Counter()))
    return out


def mutated_env() -> dict[str, str]:
    """The environment for `mutmut run`: child processes import the mutated copy too. mutmut puts mutants/ first
    on its own sys.path and names the active mutant in MUTANT_UNDER_TEST, which children inherit; a `spawn`ed
    multiprocessing child gets the parent's sys.path, but a `python some_script.py` or a Dagster run worker would
    import the package from the editable install (the unmutated source), so mutants/ goes first on PYTHONPATH."""
    # It must exist before mutmut starts: Python caches "no such folder" for a sys.path entry for the whole process,
    # and pytest would then fail to import tests/conftest.py from mutants/ ("No module named 'tests'", exit code 4).
    (ROOT / "mutants").mkdir(exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "mutants"), env.get("PYTHONPATH")]))
    return env


def _score(counts: Counter) -> dict:
    keys = ("killed", "survived", "timeout", "no_tests", "other")  # other: segfault, suspicious, ...
    checked = sum(counts[k] for k in keys)
    return {**{k: counts[k] for k in keys}, "not_checked": counts["not_checked"],
            "score": round(counts["killed"] / checked, 3) if checked else None}


def main() -> None:
    args = sys.argv[1:]
    report_only = "--report-only" in args  # read mutants/ as an earlier (maybe interrupted) run left it
    modules = [a for a in args if a != "--report-only"] or MODULES
    unknown = sorted(set(modules) - set(MODULES))
    if unknown:
        sys.exit(f"unknown module(s) {unknown}; choose from {MODULES}")
    print(json.dumps(run(modules, mutate=not report_only), indent=2))


if __name__ == "__main__":
    main()
