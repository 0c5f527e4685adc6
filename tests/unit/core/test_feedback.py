import numpy as np
import pytest

from core import names as n
from core.feedback import decode_linear, encode_linear


def test_linear_stats_round_trip_and_empty_means_nothing_learned():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, n.CONTEXT_DIM))
    gram, clicks = x.T @ x, x.sum(axis=0)
    got_gram, got_clicks = decode_linear(encode_linear(gram, clicks))
    assert got_gram == pytest.approx(gram, rel=1e-5) and (got_gram == got_gram.T).all()
    assert got_clicks == pytest.approx(clicks, rel=1e-5)
    empty_gram, empty_clicks = decode_linear("")
    assert not empty_gram.any() and not empty_clicks.any()
    assert decode_linear(None)[0].shape == (n.CONTEXT_DIM, n.CONTEXT_DIM)
    with pytest.raises(ValueError, match="expected 27"):
        decode_linear("1,2,3")
