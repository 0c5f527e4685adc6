"""One definition of every ranker input: training's builder and the API's pipeline agree."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import api.recommend
from api.recommend import recommend
from api.state import State
from core import names as n
from core.feast_store import open_store
from models.ranker_features import GNN_SCORE, RECENT_ITEMS
from models.ranker_training import point_in_time_inputs

pytestmark = pytest.mark.integration


class RecordingRanker:
    """The artifact's ranker, keeping every input matrix it is asked to score."""

    def __init__(self, ranker):
        self.ranker, self.columns, self.inputs = ranker, ranker.columns, []

    def order_scores(self, x):
        self.inputs.append(x.copy())
        return self.ranker.order_scores(x)


def test_one_user_gets_identical_ranker_inputs_in_training_and_serving(
    feast_project, trained, monkeypatch
):
    settings = feast_project.settings.model_copy(
        update={"artifacts_dir": trained.parent, "log_impressions": False, "use_ranker": True}
    )
    state = State(settings)
    events = pd.read_parquet(settings.canonical_dir / "online-retail" / "events.parquet")
    # Now: every row the online store holds (materialized, or written by the live job in other
    # tests, which appends the same rows offline) is the offline row as of now; both paths
    # read windowed counts at that time (the API through its clock).
    as_of = max(events[n.EVENT_TIMESTAMP].max(), pd.Timestamp.now(tz="UTC")) + pd.Timedelta(
        seconds=1
    )
    as_of_us = int((as_of - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1))
    state.clock_us = lambda: as_of_us
    recorder = RecordingRanker(state.bundle.ranker)
    state.bundle = replace(state.bundle, ranker=recorder)
    scored = []
    original = api.recommend.rank_scores

    def rank_scores(bundle, ctx, features, gnn, idx):
        scored.append((list(idx), ctx))
        return original(bundle, ctx, features, gnn, idx)

    monkeypatch.setattr(api.recommend, "rank_scores", rank_scores)
    counts = events[events[n.USER_ID].isin(state.bundle.users)][n.USER_ID].value_counts()
    user = str(counts.index[0])  # the busiest trained user: a live shift from many recent items

    answer = recommend(state, user, 10, "off")

    assert len(answer.items) == 10 and len(recorder.inputs) == 1
    (idx, ctx), served = scored[0], recorder.inputs[0]
    assert len(ctx.features[RECENT_ITEMS]) > 0
    bundle = state.bundle
    pairs = pd.DataFrame(
        {n.USER_ID: user, n.ITEM_ID: [bundle.ids[i] for i in idx], n.EVENT_TIMESTAMP: as_of}
    )
    categories = pd.Series(bundle.categories, index=bundle.ids)
    trained_x, columns = point_in_time_inputs(
        open_store(settings),
        pairs,
        bundle.space,
        categories,
        settings.live_interest_weight,
        bundle.ranker.columns,
    )
    assert columns == bundle.ranker.columns and trained_x.shape == served.shape
    np.testing.assert_array_equal(trained_x, served)  # NaN where both know nothing
    gnn = served[:, columns.index(GNN_SCORE)]
    assert np.isfinite(gnn).sum() > len(gnn) // 2
    counts_seen = [c for c in columns if c.startswith(f"{n.ITEM_STATS}__")]
    assert np.nansum(served[:, [columns.index(c) for c in counts_seen]]) > 0
