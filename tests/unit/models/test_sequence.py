"""models.sequence: SASRec learns what comes next, starts from the titles, and serves from the
catalogue's table."""

import numpy as np
import pandas as pd
import pytest
import torch

from core import names as n
from models.data import IdMap
from models.sequence import (
    SequenceConfig,
    SequenceModel,
    SequenceScorer,
    catalogue_table,
    pad_left,
    sequences,
    text_init,
    windows,
)

CFG = SequenceConfig(dim=16, layers=1, heads=1, max_len=8, dropout=0.0, lr=5e-3, max_epochs=40)


def test_sequences_keep_each_item_once_in_the_order_first_touched():
    t = pd.Timestamp("2024-01-01", tz="UTC")
    events = pd.DataFrame(
        {
            n.USER_ID: ["u", "u", "u", "u", "v"],
            n.ITEM_ID: ["b", "a", "b", "c", "zz"],
            n.EVENT_TIMESTAMP: [t + pd.Timedelta(minutes=m) for m in (1, 0, 2, 3, 0)],
        }
    )
    seqs = sequences(events, IdMap(["u", "v"]), IdMap(["a", "b", "c"]))
    assert seqs == {0: [0, 1, 2]}  # a, b, c; v's item is unknown


def test_padding_and_windows_put_the_newest_items_last():
    assert pad_left([[0, 1], []], 3).tolist() == [[0, 1, 2], [0, 0, 0]]
    w = windows({0: list(range(10))}, 4)  # pieces of 5 from the end, overlapping by one
    assert w[:, -1].tolist() == [10, 6, 2]


def test_it_learns_a_cyclic_next_item_pattern_and_serves_it_from_the_catalogue_table():
    rng = np.random.default_rng(0)
    seqs = {}
    for u in range(200):  # items come in a fixed cycle 0 -> 1 -> ... -> 9 -> 0, from any start
        start = int(rng.integers(10))
        seqs[u] = [(start + k) % 10 for k in range(7)]
    model = SequenceModel(10, CFG)
    hist = model.fit(seqs, epochs=40)  # no validation: every epoch
    assert hist["loss"][-1] < hist["loss"][0] / 2
    after = model.scores([[3, 4, 5]])[0]
    assert int(np.argmax(after)) == 6
    # the serving form over a catalogue that orders the items otherwise and has one more
    items = IdMap([str(i) for i in range(10)])
    catalogue = IdMap(["new", *reversed(items.ids)])
    table = catalogue_table(model.item_table(), items, catalogue, None)
    scorer = SequenceScorer(model.net, table)
    rows = [catalogue.index[i] for i in ("3", "4", "5")]
    served = scorer.scores(rows)
    assert catalogue.ids[int(np.argmax(served))] == "6"
    assert not scorer.placed[catalogue.index["new"]] and scorer.scores([]) is None
    # the trained model itself is unchanged by serving it
    assert int(np.argmax(model.scores([[3, 4, 5]])[0])) == 6


def test_text_init_places_similar_titles_near_each_other():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(2, 384))
    text = np.vstack([base[0] + 0.01 * rng.normal(size=384) for _ in range(3)])
    text = np.vstack([text, [base[1] + 0.01 * rng.normal(size=384) for _ in range(3)], base[:1]])
    init = text_init(text, 4, np.array([True] * 6 + [False]))
    assert init.shape == (7, 4)
    near, far = np.linalg.norm(init[0] - init[1]), np.linalg.norm(init[0] - init[3])
    assert near < far / 10


def test_sampled_softmax_trains_past_the_full_softmax_limit():
    cfg = SequenceConfig(**{**CFG.as_dict(), "full_softmax_items": 5, "negatives": 4})
    model = SequenceModel(10, cfg)
    seqs = {u: [(u + k) % 10 for k in range(6)] for u in range(50)}
    loss = model._loss(windows(seqs, cfg.max_len), torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and loss.item() > 0
    with pytest.raises(TypeError):
        SequenceConfig(width=3)


def test_recent_items_are_what_the_stream_holds_newest_first_and_distinct():
    from models.data import recent_items

    t = pd.Timestamp("2024-01-01", tz="UTC")
    events = pd.DataFrame(
        {
            n.USER_ID: ["u"] * 4 + ["v"],
            n.ITEM_ID: ["a", "b", "a", "c", "a"],
            n.EVENT_TIMESTAMP: [t + pd.Timedelta(minutes=m) for m in (0, 1, 2, 3, 0)],
        }
    )
    assert recent_items(events) == {"u": ["c", "a", "b"], "v": ["a"]}
    assert recent_items(events, count=2)["u"] == ["c", "a"]
