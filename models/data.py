"""Interactions from canonical events, id maps, and time-based splits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from core import names as n


@dataclass(frozen=True)
class Split:
    """Event frames of one split, in event-time order."""

    name: str
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame


def load_events(canonical_dir: Path) -> pd.DataFrame:
    """Interest events of a canonical log (impressions show no interest: left out)."""
    events = pd.read_parquet(canonical_dir / "events.parquet")
    events = events[events[n.EVENT_TYPE].map(n.EVENT_WEIGHTS).fillna(0) > 0]
    if events.empty:
        raise ValueError(f"{canonical_dir / 'events.parquet'} holds no interest events")
    return events


def time_split(events: pd.DataFrame, val_frac: float = 0.1, test_frac: float = 0.1) -> Split:
    """A global time cut: the last ``test_frac`` of events (by time) are test, the
    ``val_frac`` before them validation, everything earlier train."""
    ts = events[n.EVENT_TIMESTAMP]
    t_val, t_test = ts.quantile(1 - val_frac - test_frac), ts.quantile(1 - test_frac)
    return Split(
        f"time_cut(val={val_frac},test={test_frac})",
        events[ts < t_val],
        events[(ts >= t_val) & (ts < t_test)],
        events[ts >= t_test],
    )


def leave_last_out(events: pd.DataFrame) -> Split:
    """Per user: the last distinct-time event is test, the one before it validation."""
    ordered = events.sort_values([n.USER_ID, n.EVENT_TIMESTAMP], kind="stable")
    rank = ordered.groupby(n.USER_ID)[n.EVENT_TIMESTAMP].rank(method="dense", ascending=False)
    return Split(
        "leave_last_out",
        ordered[rank > 2],
        ordered[rank == 2],
        ordered[rank == 1],
    )


@dataclass
class IdMap:
    """Dense indices for string ids (index = position in ``ids``)."""

    ids: list[str]

    def __post_init__(self) -> None:
        self.index = {v: i for i, v in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def encode(self, values: pd.Series) -> np.ndarray:
        """Indices of ``values``; -1 for unknown ids."""
        return values.map(self.index).fillna(-1).to_numpy(dtype=np.int64)


def interaction_matrix(
    events: pd.DataFrame, users: IdMap, items: IdMap, weighted: bool = False
) -> sp.csr_matrix:
    """Users x items, 1 per (user, item) seen (or summed behaviour weights)."""
    u = users.encode(events[n.USER_ID])
    i = items.encode(events[n.ITEM_ID])
    keep = (u >= 0) & (i >= 0)
    if weighted:
        w = events[n.EVENT_TYPE].map(n.EVENT_WEIGHTS).to_numpy(dtype=np.float32)[keep]
    else:
        w = np.ones(int(keep.sum()), dtype=np.float32)
    m = sp.csr_matrix((w, (u[keep], i[keep])), shape=(len(users), len(items)))
    m.sum_duplicates()
    if not weighted:
        m.data[:] = 1.0
    return m


def edge_weights(
    events: pd.DataFrame,
    users: IdMap,
    items: IdMap,
    half_life_days: float,
    max_gap_days: float | None = None,
) -> sp.csr_matrix:
    """Users x items graph edge weights: log(1 + sum over events of behaviour weight x recency),
    recency halving every ``half_life_days`` before the last event in ``events``; with
    ``max_gap_days``, a quiet spell longer than that counts as that long (live events years
    after an old imported log must not erase it)."""
    u = users.encode(events[n.USER_ID])
    i = items.encode(events[n.ITEM_ID])
    keep = (u >= 0) & (i >= 0)
    age_days = activity_age_days(events[n.EVENT_TIMESTAMP], max_gap_days)
    w = events[n.EVENT_TYPE].map(n.EVENT_WEIGHTS).to_numpy(dtype=np.float64)
    w = w * 0.5 ** (age_days / half_life_days)
    m = sp.csr_matrix((w[keep], (u[keep], i[keep])), shape=(len(users), len(items)))
    m.sum_duplicates()
    m.data = np.log1p(m.data)
    return m.astype(np.float32)


def activity_age_days(ts: pd.Series, max_gap_days: float | None = None) -> np.ndarray:
    """Days from each time in ``ts`` to the last, every gap between consecutive distinct times
    shortened to ``max_gap_days`` at most (None: plain ages)."""
    seconds = (ts - ts.min()).dt.total_seconds().to_numpy()
    if max_gap_days is None or len(seconds) == 0:
        return (seconds.max(initial=0.0) - seconds) / 86_400
    times, where = np.unique(seconds, return_inverse=True)
    steps = np.minimum(np.diff(times), max_gap_days * 86_400)
    on_clock = np.concatenate([[0.0], np.cumsum(steps)])
    return np.asarray((on_clock[-1] - on_clock[where]) / 86_400)


def ground_truth(
    events: pd.DataFrame, users: IdMap, items: IdMap, seen: sp.csr_matrix
) -> dict[int, set[int]]:
    """Per known user: the known items they interacted with that they had not seen before."""
    u = users.encode(events[n.USER_ID])
    i = items.encode(events[n.ITEM_ID])
    truth: dict[int, set[int]] = {}
    for uu, ii in zip(u, i, strict=True):
        if uu < 0 or ii < 0 or seen[uu, ii]:
            continue
        truth.setdefault(int(uu), set()).add(int(ii))
    return truth


def recent_items(events: pd.DataFrame, count: int = 20) -> dict[str, list[str]]:
    """user_id -> their last ``count`` distinct items, newest first: what the stream's
    ``user_interest.recent_items`` holds after ``events`` (stream.steps: an item touched again
    moves to the front)."""
    ordered = events[[n.USER_ID, n.ITEM_ID, n.EVENT_TIMESTAMP]].sort_values(
        n.EVENT_TIMESTAMP, kind="stable"
    )
    last = ordered.drop_duplicates([n.USER_ID, n.ITEM_ID], keep="last").iloc[::-1]
    return {
        str(u): g[n.ITEM_ID].head(count).tolist() for u, g in last.groupby(n.USER_ID, sort=False)
    }


def one_hop(
    history: sp.csr_matrix | np.ndarray, item_vecs: np.ndarray, item_degree: np.ndarray
) -> np.ndarray:
    """LightGCN's one-hop aggregation: users embedded from the items they touched.

    history [B, I] (edge weights, sparse or dense; 0/1 for plain), item_vecs [I, D],
    item_degree [I] -> [B, D]: sum_i h_ui e_i / sqrt(deg_u deg_i), deg_u the row sum of
    ``history``. (Scaling rows, not building diagonal matrices: it runs per API request.)
    """
    deg_u = np.asarray(history.sum(axis=1)).ravel()
    scaled = item_vecs / np.sqrt(np.maximum(item_degree, 1))[:, None]
    out = np.asarray(history @ scaled) / np.sqrt(np.maximum(deg_u, 1))[:, None]
    return out.astype(np.float32)
