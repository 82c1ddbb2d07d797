"""The fault matrix's fixture and its summary table (printed at the end of every run that ran a fault test)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.faults.harness import ROWS, FaultProbe


@pytest.fixture
def fault() -> Callable[..., FaultProbe]:
    """`fault(name, project, customer)` starts one fault's probe (see tests/faults/harness.py)."""
    return FaultProbe


def _mark(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def pytest_terminal_summary(terminalreporter) -> None:
    if not ROWS:
        return
    rows = [(r.fault, _mark(r.survived), _mark(r.files_intact),
             "-" if r.leftovers is None else (", ".join(r.leftovers) or "none"), r.message[:90]) for r in ROWS]
    header = ("fault", "survived", "files intact", "leftovers", "message")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    terminalreporter.section("fault matrix")
    for row in [header, tuple("-" * w for w in widths), *rows]:
        terminalreporter.write_line("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
