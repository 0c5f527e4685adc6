import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from core import names as n
from models.baselines import ItemKNN, ItemKNNConfig, Popularity
from models.data import IdMap, ground_truth, interaction_matrix, leave_last_out, time_split
from models.evaluate import evaluate, ranked_metrics
from models.lightgcn import InterestGCN, LightGCNConfig, normalized_adjacency
from models.ranker import join_features
from models.ranker_features import category_affinity
from models.text import TextProjection
from models.train import user_vectors_from_history


def events(rows):
    return pd.DataFrame(
        [
            {
                n.USER_ID: u,
                n.ITEM_ID: i,
                n.EVENT_TYPE: t,
                n.EVENT_TIMESTAMP: pd.Timestamp(ts, unit="s", tz="UTC"),
            }
            for u, i, t, ts in rows
        ]
    )


def test_evaluate_full_ranking_metrics_by_hand():
    seen = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    scores = np.array([[9.0, 1.0, 3.0, 2.0], [4.0, 3.0, 2.0, 1.0]])
    truth = {0: {3}, 1: {2, 3}}
    m = evaluate(lambda users: scores[users], truth, seen, n_items=4, ks=(1, 2))
    # user 0: item 0 is seen, ranking 2, 3 -> hit at rank 2; user 1: ranking 0, 1 -> no hit
    assert m["hit@1"] == 0.0 and m["hit@2"] == 0.5
    assert m["recall@2"] == pytest.approx((1 / 1 + 0) / 2)
    assert m["ndcg@2"] == pytest.approx((1 / np.log2(3)) / 2, abs=1e-5)  # rounded to 5 places
    assert m["coverage@2"] == 1.0 and m["users"] == 2


def test_ranked_metrics_count_short_and_missing_lists_as_misses():
    truth = {0: {1}, 1: {2}, 2: {0}}
    # user 0: a list of one hit; user 1: an item outside the catalogue (-1) first; user 2: none
    m = ranked_metrics({0: [1], 1: [-1, 2]}, truth, n_items=4, ks=(1, 2))
    assert m["hit@1"] == pytest.approx(1 / 3, abs=1e-5)
    assert m["hit@2"] == pytest.approx(2 / 3, abs=1e-5)
    assert m["ndcg@2"] == pytest.approx((1 + 1 / np.log2(3)) / 3, abs=1e-5)
    assert m["coverage@2"] == 0.5 and m["users"] == 3


def test_itemknn_shrinkage_damps_similarities_on_few_shared_users():
    # items 0 and 1 share one user; items 2 and 3 share three: equal cosine (1.0) without shrinkage
    seen = sp.csr_matrix(
        np.array([[1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=np.float32)
    )
    plain = ItemKNN(seen, ItemKNNConfig(neighbours=3, shrinkage=0.0)).sim.toarray()
    shrunk = ItemKNN(seen, ItemKNNConfig(neighbours=3, shrinkage=3.0)).sim.toarray()
    assert plain[0, 1] == pytest.approx(plain[2, 3]) == pytest.approx(1.0)
    assert shrunk[0, 1] == pytest.approx(1 / 4) and shrunk[2, 3] == pytest.approx(3 / 6)


def test_time_split_and_leave_last_out():
    ev = events([("a", "x", "view", t) for t in range(10)])
    split = time_split(ev, 0.2, 0.2)
    assert (len(split.train), len(split.val), len(split.test)) == (6, 2, 2)
    llo = leave_last_out(
        events(
            [
                ("a", "x", "view", 1),
                ("a", "y", "view", 2),
                ("a", "z", "view", 3),
                ("b", "x", "view", 5),
            ]
        )
    )
    assert llo.test[n.ITEM_ID].tolist() == ["z", "x"] and llo.val[n.ITEM_ID].tolist() == ["y"]


def test_interaction_matrix_and_ground_truth_skip_seen_and_unknown():
    users, items = IdMap(["a", "b"]), IdMap(["x", "y"])
    hist = interaction_matrix(events([("a", "x", "view", 1), ("a", "x", "cart", 2)]), users, items)
    assert hist.toarray().tolist() == [[1.0, 0.0], [0.0, 0.0]]
    later = events(
        [("a", "x", "buy", 3), ("a", "y", "buy", 3), ("c", "y", "view", 3), ("b", "q", "view", 3)]
    )
    assert ground_truth(later, users, items, hist) == {0: {1}}


def test_itemknn_recommends_co_consumed_items_and_popularity_counts_users():
    seen = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 0]], np.float32))
    knn = ItemKNN(seen, ItemKNNConfig(neighbours=5)).scores(np.array([3]))
    assert knn[0, 1] > knn[0, 2] == 0
    assert Popularity(seen).scores(np.array([0, 1])).tolist() == [[3, 2, 1]] * 2


def test_normalized_adjacency_is_symmetric_with_unit_spectral_norm():
    r = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1]], np.float32))
    adj = normalized_adjacency(r).to_dense()
    assert adj.shape == (5, 5)
    assert torch.allclose(adj, adj.T)
    assert adj[0, 2 + 0] == pytest.approx(1 / np.sqrt(2 * 1))
    assert torch.linalg.eigvalsh(adj).abs().max() == pytest.approx(1.0, abs=1e-5)


def test_lightgcn_learns_to_rank_observed_items_first():
    r = sp.csr_matrix(np.kron(np.eye(2), np.ones((4, 4))).astype(np.float32))  # 2 blocks
    cfg = LightGCNConfig(embedding_dim=8, num_layers=1, lr=0.05, batch_size=16, seed=1)
    model = InterestGCN(8, 8, 0, cfg)
    adj = normalized_adjacency(r)
    history = model.fit(r, adj, epochs=30)
    assert history["loss"][-1] < history["loss"][0]
    scores = model.scorer(adj)(np.arange(8))
    in_block = np.kron(np.eye(2), np.ones((4, 4))).astype(bool)
    assert scores[in_block].min() > scores[~in_block].max()


def test_text_projection_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    w = rng.normal(size=(6, 3)).astype(np.float32)
    proj = TextProjection.fit(x, x @ w + 0.5, alpha=1e-6)
    assert np.allclose(proj(x[:5]), x[:5] @ w + 0.5, atol=1e-3)


def test_inductive_user_vector_is_one_hop_aggregation():
    item_emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    history = sp.csr_matrix(np.array([[1, 1, 0]], np.float32))
    vec = user_vectors_from_history(history, item_emb, np.array([1, 4, 9]))
    assert vec.numpy()[0].tolist() == pytest.approx([1 / np.sqrt(2), 1 / (np.sqrt(2) * 2)])


def test_join_features_keeps_every_row_in_order_with_nan_where_feast_dropped_one():
    ts = pd.Timestamp("2020-01-01", tz="UTC")
    rows = pd.DataFrame(
        {
            n.USER_ID: ["a", "a", "b"],
            n.ITEM_ID: ["x", "y", "x"],
            n.EVENT_TIMESTAMP: [ts, ts, ts],
            "label": [1, 0, 0],
        }
    ).astype({n.EVENT_TIMESTAMP: "datetime64[us, UTC]"})
    # Feast answered item x once (the item asked once per time) and dropped item y
    got = pd.DataFrame(
        {n.ITEM_ID: ["x"], n.EVENT_TIMESTAMP: [ts], "item_stats__views_7d": [3]}
    ).astype({n.EVENT_TIMESTAMP: "datetime64[ns, UTC]"})
    out = join_features(rows, got, n.ITEM_ID)
    assert out["label"].tolist() == [1, 0, 0] and out[n.USER_ID].tolist() == ["a", "a", "b"]
    views = out["item_stats__views_7d"]
    assert views.iloc[0] == views.iloc[2] == 3 and pd.isna(views.iloc[1])


def test_edge_weights_decay_with_age_and_weigh_behaviour():
    from models.data import edge_weights

    day = 86_400
    ev = events(
        [("a", "x", "purchase", 10 * day), ("a", "y", "view", 10 * day), ("a", "y", "view", 0)]
    )
    w = edge_weights(ev, IdMap(["a"]), IdMap(["x", "y"]), half_life_days=10).toarray()
    assert w[0, 0] == pytest.approx(np.log1p(5.0))
    assert w[0, 1] == pytest.approx(np.log1p(1.0 + 0.5))


def test_negatives_follow_popularity_weights_when_asked():
    model = InterestGCN(2, 3, 0, LightGCNConfig(embedding_dim=4, num_layers=1))
    gen = torch.Generator().manual_seed(0)
    assert set(model._negatives(50, torch.tensor([0.0, 0.0, 1.0]), gen).tolist()) == {2}
    assert set(model._negatives(200, None, gen).tolist()) == {0, 1, 2}


def test_hard_negatives_are_the_highest_scored_of_the_candidates():
    model = InterestGCN(1, 4, 0, LightGCNConfig(embedding_dim=2, num_layers=0, neg_candidates=4))
    emb = torch.tensor([[1.0, 0.0], [0.1, 0], [0.9, 0], [0.5, 0], [-1.0, 0]])  # user, 4 items
    gen = torch.Generator().manual_seed(0)
    picks = model._hardest(emb, torch.zeros(300, dtype=torch.long), 300, None, gen)
    assert picks.min() >= 1  # node ids: items start after the user
    counts = torch.bincount(picks - 1, minlength=4)
    assert counts[1] > counts[2] > counts[0] > counts[3]  # item 1 scores highest, 3 lowest


def test_category_affinity_is_the_users_share_of_interest_in_the_items_category():
    tops = [["mug", "bag"], ["mug", "bag"], ["mug", "bag"], None, ["mug"]]
    weights = [[3.0, 1.0], [3.0, 1.0], [3.0, 1.0], None, [0.0]]
    got = category_affinity(tops, weights, ["mug", "bag", "hat", "mug", "mug"])
    np.testing.assert_allclose(got, [0.75, 0.25, 0, 0, 0])
