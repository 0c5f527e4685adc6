import random

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream.live import freshness
from stream.metrics import GroupedHistogram


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, s.labels.get("le", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_grouped_histogram_exposes_what_the_library_histogram_does():
    """observe(v, k) == k calls of Histogram.observe(v): the same buckets (an observation on a
    bound counts in it), count and sum, under the same names."""
    rng = random.Random(7)
    mine, theirs = CollectorRegistry(), CollectorRegistry()
    grouped = GroupedHistogram("fresh_seconds", "doc", (0.01, 0.05, 0.1, 1), mine)
    plain = Histogram("fresh_seconds", "doc", buckets=(0.01, 0.05, 0.1, 1), registry=theirs)
    for _ in range(500):
        value, times = rng.choice([0.0, 0.01, 0.05, 0.3, 7.0, rng.random()]), rng.randint(1, 4)
        grouped.observe(value, times)
        for _ in range(times):
            plain.observe(value)
    got, want = _samples(mine), _samples(theirs)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert abs(got[key] - value) <= 1e-9 * max(1.0, abs(value)), key
    assert got[("fresh_seconds_count", "")] > 500


def test_freshness_is_counted_once_per_millisecond_run_of_entry_ids():
    ids = ["1000-0", "1000-1", "1500-0", "1000-2", "2100-0", "2100-1", "2100-2"]
    assert list(freshness(2_000.0, ids)) == [(1.0, 2), (0.5, 1), (1.0, 1), (0.0, 3)]
    assert list(freshness(2_000.0, [])) == []
