"""models.graph_filter: EASE and GF-CF's linear filter score a shopper by their interaction row."""

import numpy as np
import pytest
import scipy.sparse as sp

from models.graph_filter import EASE, GFCF, GraphFilter, GraphFilterConfig, choose_l2, ease


def _baskets(seed: int = 0, users: int = 300) -> sp.csr_matrix:
    """Two disjoint groups of items bought together: items 0-4 and items 5-9, plus noise."""
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for u in range(users):
        group = np.arange(5) + 5 * (u % 2)
        for i in rng.choice(group, 3, replace=False).tolist() + [int(rng.integers(10, 20))]:
            rows.append(u)
            cols.append(i)
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(users, 20))


def test_ease_is_the_closed_form_ridge_regression_with_a_zero_diagonal():
    r = _baskets()
    w = ease(r, 10.0)
    assert np.allclose(np.diag(w), 0.0)
    g = (r.T @ r).toarray()
    # EASE's optimality: for every column j, (G + λI) w_j = G e_j + μ_j e_j (a multiplier on
    # the zeroed diagonal only): off the diagonal the residual vanishes
    residual = (g + 10.0 * np.eye(20)) @ w - g
    off = ~np.eye(20, dtype=bool)
    assert np.abs(residual[off]).max() < 1e-3


@pytest.mark.parametrize("kind", [EASE, GFCF])
def test_a_shoppers_scores_follow_the_group_of_items_they_have(kind):
    r = _baskets()
    f = GraphFilter.fit(r, GraphFilterConfig(kind=kind, l2=10.0, keep=20))
    row = sp.csr_matrix((np.ones(2), ([0, 0], [0, 1])), shape=(1, 20))  # two of group 0-4
    scores = f.scores(row)[0]
    assert scores[2:5].min() > scores[5:10].max()  # the rest of their group first
    # a new interaction changes the scores with no refit: one item of group 5-9 added
    row2 = sp.csr_matrix((np.ones(3), ([0, 0, 0], [0, 1, 5])), shape=(1, 20))
    assert f.scores(row2)[0][6:10].mean() > scores[6:10].mean()


def test_pruning_keeps_each_items_largest_weights():
    f = GraphFilter.fit(_baskets(), GraphFilterConfig(kind=EASE, l2=10.0, keep=3))
    assert np.diff(f.weights.indptr).max() <= 3


def test_auto_takes_gfcf_past_the_dense_limit_and_the_l2_grid_picks_the_best():
    cfg = GraphFilterConfig(max_dense_items=10)
    assert cfg.resolved_kind(20) == GFCF and cfg.resolved_kind(10) == EASE
    assert choose_l2(_baskets(), lambda f: 0.0, cfg) == (None, [])
    picked, rows = choose_l2(
        _baskets(), lambda f: -abs(f.l2 - 300.0), GraphFilterConfig(), grid=(100.0, 300.0, 1000.0)
    )
    assert picked == 300.0 and len(rows) == 3
    with pytest.raises(ValueError, match="unknown graph filter kind"):
        GraphFilter.fit(_baskets(), GraphFilterConfig(kind="svd"))
