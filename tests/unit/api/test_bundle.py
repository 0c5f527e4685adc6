"""Bundle (a serving artifact) and the recommend pipeline's units, on a tiny hand-made
artifact."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from api import cache as item_cache
from api import recommend as rec
from api.bundle import Bundle
from api.cache import ItemFeatureCache
from api.features import Context
from core import names as n
from models.artifact import ArtifactError
from models.explore import ExploreConfig

# Items 0-2 are "mugs" (a cluster in item space), 3-4 "bags", 5 a cold bag (text only), 6 has
# neither an embedding nor a title, 7 is unavailable.
ITEM_VECS = np.array(
    [[1, 0], [0.9, 0.1], [0.95, 0.05], [0, 1], [0.1, 0.9], [0.0, 0.0], [0.0, 0.0], [0.7, 0.7]],
    dtype=np.float32,
)


@pytest.fixture
def bundle(tmp_path):
    ids = [f"i{j}" for j in range(8)]
    graph = [0, 1, 2, 3, 4, 7]
    pd.DataFrame(
        {
            n.ITEM_ID: ids,
            n.TITLE: ["mug a", "mug b", "mug c", "bag a", "bag b", "bag new", None, "old"],
            n.CATEGORY: ["mug", "mug", "mug", "bag", "bag", "bag", None, "mug"],
            "popularity": [50, 10, 5, 40, 30, 0, 0, 99],
            "in_graph": [j in graph for j in range(8)],
            "available": [True] * 7 + [False],
        }
    ).to_parquet(tmp_path / "catalogue.parquet")
    (tmp_path / "items.json").write_text(json.dumps([ids[j] for j in graph]))
    (tmp_path / "users.json").write_text(json.dumps(["mug-lover"]))
    (tmp_path / "manifest.json").write_text(json.dumps({"version": "v-test"}))
    np.save(tmp_path / "item_embeddings.npy", ITEM_VECS[graph])
    np.save(tmp_path / "user_embeddings.npy", np.array([[1.0, 0.0]], dtype=np.float32))
    sp.save_npz(tmp_path / "seen.npz", sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 8)))
    text = np.zeros((8, 3), dtype=np.float32)
    text[:3, 0] = 1  # mugs
    text[3:6, 1] = 1  # bags, the cold one included
    text[6:, 2] = 1
    np.save(tmp_path / "catalogue_text_embeddings.npy", text)
    # A projection that maps text axis 0 -> item axis 0, text axis 1 -> item axis 1.
    np.save(tmp_path / "text_projection.npy", np.array([[1, 0], [0, 1], [0, 0], [0, 0]], "f4"))
    pd.DataFrame(
        {"attribute": "country", "value": "NL", n.ITEM_ID: ["i4", "i7", "i3"], "users": [9, 8, 7]}
    ).to_parquet(tmp_path / "segments.parquet")
    pd.DataFrame({n.USER_ID: ["stranger", "mug-lover"], "country": ["NL", "UK"]}).to_parquet(
        tmp_path / "user_attributes.parquet"
    )
    return Bundle.load(tmp_path)


def test_load_places_cold_items_by_text_and_leaves_the_rest_unplaced(bundle):
    assert bundle.version == "v-test" and bundle.ranker is None
    assert list(bundle.placed_by) == ["graph"] * 5 + ["text", "none", "graph"]
    np.testing.assert_allclose(bundle.vectors[5], [0, 1])
    assert bundle.titles[6] is None and bundle.categories[6] is None


def test_incomplete_artifact_is_a_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match="missing manifest.json"):
        Bundle.load(tmp_path)


def test_retrieve_ranks_available_placed_items(bundle):
    rows, scores = bundle.retrieve(np.array([1.0, 0.0], dtype=np.float32), 4)
    assert rows.tolist() == [0, 2, 1, 4]  # item 7 is unavailable, 6 unplaced
    assert scores.tolist() == sorted(scores.tolist(), reverse=True)


def test_recent_items_move_the_user_and_embed_a_new_one(bundle):
    trained = bundle.user_vector("mug-lover", [], live_weight=1.0)
    np.testing.assert_allclose(trained, [1, 0])
    moved = bundle.user_vector("mug-lover", ["i3", "i4"], live_weight=1.0)
    bag, mug = bundle.vectors[3], bundle.vectors[0]
    assert trained @ bag == 0 and (moved @ bag) / (moved @ mug) > 0.9  # bags caught up
    new = bundle.user_vector("stranger", ["i4", "i3"], live_weight=1.0)
    assert bundle.retrieve(new, 1)[0].tolist() in ([3], [4], [5])
    assert bundle.user_vector("stranger", [], live_weight=1.0) is None
    assert bundle.user_vector("stranger", ["unknown", "i6"], live_weight=1.0) is None


def test_similar_excludes_itself_and_works_for_a_cold_item(bundle):
    rows, sims = bundle.similar(0, 2)
    assert rows.tolist() == [2, 1]
    rows, _ = bundle.similar(5, 2)  # the cold bag, placed by its title
    assert set(rows.tolist()) == {3, 4}


def test_diverse_popular_alternates_categories(bundle):
    rows = bundle.diverse_popular(4)
    cats = [bundle.categories[r] for r in rows]
    assert cats == ["mug", "bag", "mug", "bag"]
    assert 7 not in rows  # unavailable
    assert [bundle.categories[r] for r in bundle.diverse_popular(2, ["bag"])] == ["bag", "mug"]


# The candidate sources read two settings; a failing unit would count an error (none here).
STATE = SimpleNamespace(settings=SimpleNamespace(candidates_gnn=10, candidates_other=4))


def test_filter_drops_bought_recent_and_unavailable(bundle):
    ctx = Context({f"{n.USER_INTEREST}__{n.RECENT_ITEMS}": ["i3"]})
    q = rec.Query("mug-lover", 5, "off", "thompson", bundle, ctx=ctx)
    mask = rec.filter_seen(None, q, np.arange(8)) & rec.filter_unavailable(None, q, np.arange(8))
    assert np.flatnonzero(~mask).tolist() == [0, 3, 7]


def test_fallback_serves_popular_minus_bought_and_says_degraded(bundle):
    body = rec.fallback(bundle, "mug-lover", 3, rec.Timer())
    assert body.degraded and [i.item_id for i in body.items] == ["i3", "i1", "i4"]
    assert body.items[0].score == pytest.approx(40 / 99)


def test_candidates_for_a_new_user_without_history_are_popular_across_categories(bundle):
    cands = rec._gather(STATE, rec.Query("newcomer", 5, "auto", "thompson", bundle))
    assert [bundle.categories[r] for r in cands.idx] == ["mug", "bag", "mug", "bag"]
    assert all(s == ["popular"] for s in cands.sources)


def test_new_shopper_with_known_demographics_gets_their_segments_favourites(bundle):
    assert bundle.user_segments == {"stranger": [("country", "NL")], "mug-lover": []}
    cands = rec._gather(STATE, rec.Query("stranger", 5, "auto", "thompson", bundle))
    assert cands.idx[:2].tolist() == [4, 3]  # i7 is unavailable
    assert "segment" in cands.sources[0] and "segment" in cands.sources[1]
    reason = rec.explain(
        bundle, 4, ["segment"], False, np.zeros(0, np.int64), [], ("country", "NL")
    )
    assert reason == "popular with shoppers who share your country (NL)"
    assert bundle.segment_of("stranger", 3) == ("country", "NL")


def test_resolve_share():
    cfg = ExploreConfig()
    assert rec.resolve_share("off", 0, cfg) == 0
    assert rec.resolve_share("auto", 0, cfg) == pytest.approx(cfg.max_share)
    assert rec.resolve_share("1", 0, cfg) == cfg.max_share  # bounded
    assert rec.resolve_share("0.1", 0, cfg) == pytest.approx(0.1)


def test_item_feature_cache_expires_and_can_be_off(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(item_cache.time, "monotonic", lambda: clock[0])
    cache = ItemFeatureCache(ttl_s=1.0)
    cache.put_many(["a"], [{"x": 1}])
    assert cache.get_many(["a", "b"]) == [{"x": 1}, None]
    clock[0] += 1.5
    assert cache.get_many(["a"]) == [None]
    off = ItemFeatureCache(ttl_s=0)
    off.put_many(["a"], [{"x": 1}])
    assert off.get_many(["a"]) == [None]


def test_reasons_match_how_an_item_was_found(bundle):
    none = np.zeros(0, np.int64)
    anchors = np.array([0])
    assert (
        rec.explain(bundle, 1, ["gnn"], False, anchors, []) == "because you interacted with “mug a”"
    )
    assert rec.explain(bundle, 5, ["gnn"], False, anchors, []).startswith("new in the catalogue")
    assert rec.explain(bundle, 5, ["popular"], False, none, []) == "popular right now"
    assert rec.explain(bundle, 3, ["category"], False, none, ["bag"]).startswith("popular in bag")
    assert rec.explain(bundle, 3, ["gnn"], True, anchors, []).startswith("new for you")


def test_the_live_catalogue_adds_a_titled_item_placed_by_text_and_takes_one_off_sale(bundle):
    from core.catalogue import Entry

    encoded = []

    def encode(titles):  # a "bag" title lands on text axis 1
        encoded.extend(titles)
        return np.array([[0.0, 1.0, 0.0]] * len(titles), dtype=np.float32)

    entries = {
        "new-bag": Entry("new-bag", "bag newest", "bag", "Acme"),
        "i0": Entry("i0", None, None, None, available=False),  # out of stock, rest kept
    }
    live = bundle.with_catalogue(entries, encode, version=3)
    assert encoded == ["bag newest"] and live.catalogue_version == 3
    ix = live.index["new-bag"]
    assert (ix, live.placed_by[ix], live.brands[ix], live.categories[ix]) == (
        8,
        "text",
        "Acme",
        "bag",
    )
    assert live.retrievable[ix] and live.text.shape[0] == 9 and live.seen.shape == (1, 9)
    assert ix in live.similar(live.index["i3"], 3)[0]  # next to the bags
    assert not live.available[0] and not live.retrievable[0] and live.titles[0] == "mug a"
    assert 0 not in live.retrieve(np.array([1.0, 0.0], "f4"), 8)[0]
    assert ix in live.by_category["bag"]
    # built from the artifact as read: laying the same entries on again changes nothing more
    again = live.with_catalogue(entries, encode, version=4)
    assert len(again.ids) == 9 and encoded == ["bag newest", "bag newest"]
    assert bundle.available[0] and len(bundle.ids) == 8  # the bundle it came from is unchanged
