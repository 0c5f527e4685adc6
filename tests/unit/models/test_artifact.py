"""models.artifact: forgetting a shopper in saved artifacts (every version); the ranker's safe
format."""

import json
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from core import names as n
from models.artifact import (
    FORGOTTEN_USER,
    Artifact,
    IncompleteArtifact,
    forget_user,
    read,
    save,
)
from models.ranker import Ranker


def _artifact(version: str) -> Artifact:
    users, items = ["u1", "u2", "u3"], ["i1", "i2"]
    return Artifact(
        manifest={"version": version},
        users=users,
        items=items,
        user_embeddings=np.ones((3, 4), np.float32),
        item_embeddings=np.ones((2, 4), np.float32),
        catalogue=pd.DataFrame({n.ITEM_ID: items}),
        seen=sp.csr_matrix(np.ones((3, 2))),
        segments=pd.DataFrame(
            {"attribute": ["country"], "value": ["UK"], n.ITEM_ID: ["i1"], "users": [2]}
        ),
        user_attributes=pd.DataFrame({n.USER_ID: users, "country": ["UK", "UK", "FR"]}),
        weights={"embedding.weight": torch.ones(5, 4), "alpha": torch.ones(3)},
    )


def test_forget_user_zeroes_their_rows_in_every_version_and_keeps_the_others(tmp_path):
    save(_artifact("v1"), tmp_path)
    save(_artifact("v2"), tmp_path)
    assert forget_user(tmp_path, "u2") == 2
    for version in ("v1", "v2"):
        art = read(tmp_path / version)
        assert art.users == ["u1", FORGOTTEN_USER, "u3"]
        assert art.user_embeddings[1].tolist() == [0.0] * 4
        assert art.user_embeddings[[0, 2]].sum() == 8
        assert art.seen[1].nnz == 0 and art.seen[0].nnz == 2
        assert art.user_attributes[n.USER_ID].tolist() == ["u1", "u3"]
        weights = torch.load(tmp_path / version / "lightgcn.pt", weights_only=True)
        assert weights["embedding.weight"][1].abs().sum() == 0  # users' rows come first
        assert weights["embedding.weight"][[0, 2, 3, 4]].sum() == 16
        assert "u2" not in json.loads((tmp_path / version / "users.json").read_text())
    assert forget_user(tmp_path, "u2") == 0  # nothing left to change
    assert forget_user(tmp_path / "missing", "u2") == 0


def test_the_ranker_is_saved_in_skops_format_and_loaded_without_unpickling(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((300, 3)), rng.random(300) > 0.5
    ranker = Ranker(columns=["a", "b", "gnn_score"], weight=0.3).fit_matrix(x, y)
    art = _artifact("v1")
    art.ranker = ranker
    save(art, tmp_path)
    assert not list(tmp_path.glob("v1/*.pkl"))
    loaded = read(tmp_path / "v1").ranker
    assert loaded.columns == ["a", "b", "gnn_score"] and loaded.weight == 0.3
    np.testing.assert_array_equal(loaded.order_scores(x), ranker.order_scores(x))
    import skops.io as sio

    sio.dump({"model": ranker.model, "x": Decimal(1)}, tmp_path / "v1" / "ranker.skops")
    with pytest.raises(IncompleteArtifact, match="holds types this project does not load"):
        read(tmp_path / "v1")
