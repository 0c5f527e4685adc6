"""models.ranker: the served order blends the trees and the GNN score; the weight is chosen on
validation users the trees did not see."""

import numpy as np
import pytest

from models.ranker import Ranker, choose_blend, list_ndcg


def _rows(seed: int, users: int = 120, per_user: int = 30, gnn_signal: float = 1.0):
    """Per user a candidate list: a feature column that predicts the label a little, and a GNN
    score that predicts it with strength ``gnn_signal``."""
    rng = np.random.default_rng(seed)
    n = users * per_user
    uid = np.repeat(np.arange(users).astype(str), per_user)
    y = (rng.random(n) < 0.1).astype(int)
    feature = y * 0.3 + rng.normal(size=n)
    gnn = y * gnn_signal + rng.normal(size=n)
    return np.column_stack([feature, gnn]), y, uid


def test_list_ndcg_orders_each_users_list_by_score():
    y = np.array([1, 0, 0, 0, 1, 0])
    users = np.array(["a", "a", "a", "b", "b", "b"])
    perfect = np.array([3.0, 2, 1, 1, 3, 2])
    assert list_ndcg(perfect, y, users) == 1.0
    worst = -perfect
    assert list_ndcg(worst, y, users) == pytest.approx(1 / np.log2(4))
    assert list_ndcg(perfect, np.zeros(6, int), users) == 0.0  # no positives: no users


def test_weight_zero_is_retrieval_order_and_one_is_the_trees():
    x, y, _ = _rows(0)
    ranker = Ranker(["feature", "gnn_score"]).fit_matrix(x, y)
    np.testing.assert_array_equal(np.argsort(-ranker.order_scores(x, 0.0)), np.argsort(-x[:, 1]))
    np.testing.assert_array_equal(ranker.order_scores(x, 1.0), ranker.predict_matrix(x))
    unplaced = x.copy()
    unplaced[0, 1] = np.nan  # no GNN score: last in retrieval order
    assert np.argmin(ranker.order_scores(unplaced, 0.0)) == 0


def test_the_blend_follows_the_stronger_signal_on_held_out_users():
    x, y, users = _rows(1, gnn_signal=3.0)  # the GNN score nearly separates the labels
    weight, shares, grid = choose_blend(x, y, users, ["feature", "gnn_score"], seed=0)
    assert weight < 0.5 and len(grid) == 11 and shares == {"gnn_score": 1.0}
    scores = {r["weight"]: r["ndcg@20"] for r in grid}
    assert scores[weight] == max(scores.values()) and scores[weight] > scores[1.0]
    x, y, users = _rows(2, gnn_signal=0.0)  # the GNN score is noise: the trees win
    weight, _, _ = choose_blend(x, y, users, ["feature", "gnn_score"], seed=0)
    assert weight >= 0.5


def test_the_blend_shares_retrieval_between_the_gnn_and_the_graph_filter_by_their_signal():
    x, y, users = _rows(3, gnn_signal=0.0)  # the GNN score is noise
    rng = np.random.default_rng(3)
    graph_filter = y * 3.0 + rng.normal(size=len(y))  # the graph filter nearly separates them
    x = np.column_stack([x, graph_filter])
    columns = ["feature", "gnn_score", "graph_filter_score"]
    weight, shares, grid = choose_blend(x, y, users, columns, seed=0)
    assert len(grid) == 11 * 5 and shares["graph_filter_score"] >= 0.75 and weight < 0.5
    ranker = Ranker(columns, weight=weight, shares=shares).fit_matrix(x, y)
    # retrieval order alone with the filter's full share is the filter's order
    only_filter = ranker.order_scores(x, 0.0, {"gnn_score": 0.0, "graph_filter_score": 1.0})
    np.testing.assert_array_equal(np.argsort(-only_filter), np.argsort(-graph_filter))


def test_a_ranker_saved_before_the_graph_filter_keeps_its_gnn_scale():
    old = Ranker(["feature", "gnn_score"], weight=0.0, scale={"ranker": [0, 1], "gnn": [2.0, 4.0]})
    x = np.array([[0.0, 6.0], [0.0, 2.0]])
    assert old.shares == {"gnn_score": 1.0}
    np.testing.assert_allclose(old.order_scores(x), [1.0, 0.0])
