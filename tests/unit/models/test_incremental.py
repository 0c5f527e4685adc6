"""Continuous training's pure parts: edge recency over quiet spells, the served history that
rollback walks, the retrain interval."""

import argparse

import numpy as np
import pandas as pd
import pytest

from cli.models import duration
from models import artifact
from models.data import activity_age_days
from models.incremental import rollback


def test_a_quiet_spell_longer_than_the_cap_counts_as_the_cap():
    ts = pd.Series(
        pd.to_datetime(["2011-01-01", "2011-01-03", "2026-01-01", "2026-01-02"], utc=True)
    )
    plain = activity_age_days(ts)
    assert plain[0] > 5000  # years: an old log would fade to nothing beside live events
    capped = activity_age_days(ts, max_gap_days=30)
    assert capped.tolist() == pytest.approx([33.0, 31.0, 1.0, 0.0])
    assert activity_age_days(ts[:2], 30).tolist() == pytest.approx([2.0, 0.0])  # short gaps kept


def _version(root, name):
    (root / name).mkdir()
    (root / name / artifact.MANIFEST).write_text("{}")


def test_rollback_walks_back_the_promotions_and_stops_at_the_first(tmp_path, monkeypatch):
    monkeypatch.setattr(artifact, "read", lambda path: None)  # the folders are stand-ins
    for v in ("a", "b", "c"):
        _version(tmp_path, v)
        artifact.point_latest(tmp_path, v)
    assert artifact.served_stack(tmp_path) == ["a", "b", "c"]
    assert rollback(tmp_path) == ("c", "b")
    assert artifact.latest_version(tmp_path) == "b"
    assert rollback(tmp_path) == ("b", "a")
    with pytest.raises(ValueError, match="no earlier served artifact"):
        rollback(tmp_path)
    artifact.point_latest(tmp_path, "c")  # promoted again: a rollback returns to a
    assert rollback(tmp_path) == ("c", "a")
    assert rollback(tmp_path, to="b") == ("a", "b")  # by name


def test_retrain_interval_parses_units_and_refuses_nonsense():
    assert [duration(t) for t in ("900", "90s", "15m", "1h")] == [900, 90, 900, 3600]
    for bad in ("", "m", "-5m", "0", "ten"):
        with pytest.raises(argparse.ArgumentTypeError):
            duration(bad)
    assert np.isfinite(duration("1.5h"))


def test_only_a_difference_beyond_chance_refuses_a_candidate():
    from models.incremental import worse_bound

    noisy = np.array([0.3, -0.4, 0.1, -0.2, 0.0, -0.1])  # mean -0.05 on six shoppers
    assert worse_bound(noisy) > 0  # could be chance: not refused
    broken = np.full(200, -0.05) + np.random.default_rng(0).normal(0, 0.05, 200)
    assert worse_bound(broken) < -0.03  # worse for certain
    assert worse_bound(np.zeros(50)) == 0.0  # the same model: not worse
    assert worse_bound(np.array([])) == 0.0 and worse_bound(np.array([-0.2])) == -0.2
