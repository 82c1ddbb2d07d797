import pytest

from bluegreen_dagster import plausibility, records
from bluegreen_dagster.plausibility import Implausible
from bluegreen_dagster.reading import GraphCounts


def counts(nodes: int, rels: int) -> GraphCounts:
    return GraphCounts(nodes, rels, {"Person": nodes}, {"KNOWS": rels})


def test_empty_graph_is_refused_even_without_a_live_database():
    with pytest.raises(Implausible, match="empty graph"):
        plausibility.check(counts(0, 0), None, max_shrink_percent=50, new_name="acme-2", live_name=None)


def test_empty_graph_is_refused_even_with_the_override():
    with pytest.raises(Implausible, match="empty graph"):
        plausibility.check(counts(0, 0), counts(10, 10), max_shrink_percent=50, new_name="acme-2",
                           live_name="acme-1", allow_shrink=True)


def test_shrink_beyond_the_limit_names_both_counts_and_the_override():
    with pytest.raises(Implausible) as exc:
        plausibility.check(counts(1000, 4000), counts(1000, 10_000), max_shrink_percent=50, new_name="acme-2",
                           live_name="acme-1")
    message = str(exc.value)
    assert "relationships 10,000 -> 4,000 (-60%)" in message
    assert "acme-1" in message and records.ALLOW_SHRINK_TAG in message
    assert "nodes" not in message.split("shrinks")[1].split("more than")[0]  # nodes did not shrink


def test_shrink_within_the_limit_growth_and_override_pass():
    plausibility.check(counts(600, 600), counts(1000, 1000), max_shrink_percent=50, new_name="a-2", live_name="a-1")
    plausibility.check(counts(5000, 9000), counts(1000, 1000), max_shrink_percent=50, new_name="a-2", live_name="a-1")
    plausibility.check(counts(10, 10), counts(1000, 1000), max_shrink_percent=50, new_name="a-2", live_name="a-1",
                       allow_shrink=True)
