import numpy as np
import pytest
import scipy.sparse as sp

from core import names as n
from models.ranker_features import (
    CATEGORY_AFFINITY,
    GNN_SCORE,
    GRAPH_FILTER_SCORE,
    TOP_CATEGORIES,
    TOP_CATEGORY_SCORES,
    ItemSpace,
    ranker_inputs,
)


def space(trained=None):
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    return ItemSpace(
        users={"u": 0},
        user_vectors=np.array([[2.0, 0.0]], dtype=np.float32),
        index={"a": 0, "b": 1, "c": 2, "none": 3},
        vectors=vectors,
        popularity=np.array([3.0, 0.0, 1.0, 0.0], dtype=np.float32),
        placed=np.array([True, True, True, False]),
        trained=trained,
    )


def test_user_vector_moves_only_toward_recent_items_the_embedding_did_not_train_on():
    trained = sp.csr_matrix(np.array([[1, 0, 0, 0]], dtype=np.float32))  # u trained on "a"
    s = space(trained)
    assert np.array_equal(s.user_vector("u", ["a", "none", "zzz"], 1.0), [2.0, 0.0])
    moved = s.user_vector("u", ["b", "a"], 1.0)  # only "b" counts: |base| * unit(b)
    assert moved == pytest.approx([2.0, 2.0])
    assert s.user_vector("u", ["b"], 0.0) == pytest.approx([2.0, 0.0])
    # without the training matrix every recent item counts (one-hop, 1/sqrt(degree + 1))
    untrained = space().user_vector("u", ["a"], 1.0)
    assert untrained == pytest.approx([4.0, 0.0])


def test_user_vector_of_an_unknown_user_is_the_one_hop_of_recent_items_or_none():
    s = space()
    new = s.user_vector("stranger", ["b", "c"], 1.0)
    w = np.array([1.0, 0.85])
    expected = (w[0] * np.array([0, 1]) / 1 + w[1] * np.array([1, 1]) / np.sqrt(2)) / np.sqrt(
        w.sum()
    )
    assert new == pytest.approx(expected, rel=1e-5)
    assert s.user_vector("stranger", ["none"], 1.0) is None


def test_gnn_scores_are_nan_where_the_user_or_the_item_has_no_vector():
    s = space()
    got = s.gnn_scores(np.array([1.0, 2.0], dtype=np.float32), np.array([0, 2, 3, -1]))
    assert got[:2] == pytest.approx([1.0, 3.0]) and np.isnan(got[2:]).all()
    assert np.isnan(s.gnn_scores(None, np.array([0, 1]))).all()


def test_ranker_inputs_take_item_user_affinity_and_gnn_columns_with_nan_for_unknowns():
    views_7d = n.full_name(n.ITEM_STATS, "views_7d")
    user_total = n.full_name(n.USER_BEHAVIOR, n.EVENTS_TOTAL)
    columns = [views_7d, user_total, CATEGORY_AFFINITY, GNN_SCORE]
    user = {user_total: 7, TOP_CATEGORIES: ["mug", "bag"], TOP_CATEGORY_SCORES: [3.0, 1.0]}
    items = {views_7d: [5, None]}
    x = ranker_inputs(columns, user, items, ["mug", "hat"], {GNN_SCORE: np.array([0.5, np.nan])})
    assert x[0] == pytest.approx([5.0, 7.0, 0.75, 0.5])
    assert np.isnan(x[1, 0]) and x[1, 1] == 7.0 and x[1, 2] == 0.0 and np.isnan(x[1, 3])
    assert np.isnan(ranker_inputs([user_total], {}, {}, ["mug"], {})).all()
    # a model-score column no score was given for is unknown
    assert np.isnan(ranker_inputs([GRAPH_FILTER_SCORE], {}, {}, ["mug"], {})).all()
