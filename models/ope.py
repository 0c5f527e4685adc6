"""Off-policy evaluation (OPE): a target policy's click-through rate from another policy's log.

Estimators as the Open Bandit Pipeline defines them (Saito et al., "Open Bandit Dataset and
Pipeline", 2021), with w = target_prob / pscore per logged row:
IPW = mean(w * r), SNIPS = sum(w * r) / sum(w), DR = mean(q_target + w * (r - q_logged)).
Each comes with a seeded percentile-bootstrap interval over the logged rows.

A logged frame has one row per impression (a round's item at one position): ``item_id``,
``position``, ``click`` (the reward) and ``propensity_score`` (the logging policy's probability
of that item at that position). Two sources: the Open Bandit Dataset sample (a context-free
Bernoulli-TS log, whose target distribution is per (item, position)), and the platform's own
event stream, where every impression carries every policy's probability of its slot in that
request (api.impressions), so a target's probability is exact per row (:func:`impression_log`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import names as n

# The logged frame's columns (the Open Bandit Dataset's names).
POSITION = "position"
CLICK = "click"
PSCORE = "propensity_score"
LOGGED_COLUMNS = (n.ITEM_ID, POSITION, CLICK, PSCORE)

ESTIMATORS = ("ipw", "snips", "dr")
OBD_POLICIES = ("random", "bts")  # uniform random and Bernoulli Thompson sampling
OBD_DIR = "open-bandit-dataset"


@dataclass(frozen=True)
class Estimate:
    """A policy value (here a CTR) and its bootstrap interval."""

    name: str
    value: float
    ci_low: float
    ci_high: float


# -- estimators on arrays ---------------------------------------------------------------------


def _as_arrays(**named: object) -> dict[str, np.ndarray]:
    """Named 1-D float arrays [n] of one length, finite; ValueError otherwise."""
    out = {k: np.asarray(v, dtype=np.float64) for k, v in named.items()}
    lengths = {k: a.shape for k, a in out.items()}
    if any(a.ndim != 1 for a in out.values()) or len(set(lengths.values())) != 1:
        raise ValueError(f"expected 1-D arrays of one length, got shapes {lengths}")
    if next(iter(out.values())).size == 0:
        raise ValueError("no logged rows")
    bad = [k for k, a in out.items() if not np.isfinite(a).all()]
    if bad:
        raise ValueError(f"non-finite values in {bad}")
    return out


def _weights(reward, pscore, target_prob) -> tuple[np.ndarray, np.ndarray]:
    """Checked rewards [n] and importance weights w = target_prob / pscore [n]."""
    a = _as_arrays(reward=reward, pscore=pscore, target_prob=target_prob)
    if (a["pscore"] <= 0).any() or (a["pscore"] > 1).any():
        raise ValueError("pscore must lie in (0, 1]: a logged action had no chance to be logged")
    if (a["target_prob"] < 0).any() or (a["target_prob"] > 1).any():
        raise ValueError("target_prob must lie in [0, 1]")
    return a["reward"], a["target_prob"] / a["pscore"]


def ipw(reward, pscore, target_prob) -> float:
    """Inverse propensity weighting: mean(w * r) over [n] rows; unbiased, high variance."""
    r, w = _weights(reward, pscore, target_prob)
    return float(np.mean(w * r))


def snips(reward, pscore, target_prob) -> float:
    """Self-normalised IPW: sum(w * r) / sum(w); slightly biased, bounded by the rewards."""
    r, w = _weights(reward, pscore, target_prob)
    if w.sum() <= 0:
        raise ValueError("target_prob is 0 on every logged row: SNIPS is undefined")
    return float(np.sum(w * r) / np.sum(w))


def dr(reward, pscore, target_prob, q_logged, q_target) -> float:
    """Doubly robust: mean(q_target + w * (r - q_logged)); unbiased if either the propensities
    or the reward model are right, and lower variance than IPW when the model is good.
    ``q_logged`` [n]: the model's reward for the logged action; ``q_target`` [n]: its expected
    reward under the target policy at that row."""
    r, w = _weights(reward, pscore, target_prob)
    q = _as_arrays(reward=r, q_logged=q_logged, q_target=q_target)
    return float(np.mean(q["q_target"] + w * (r - q["q_logged"])))


def _row_terms(r, w, q_logged=None, q_target=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each estimator as a ratio sum(num) / sum(den) of per-row terms [n] (bootstrap-ready)."""
    ones = np.ones_like(r)
    terms = {"ipw": (w * r, ones), "snips": (w * r, w)}
    if q_logged is not None and q_target is not None:
        terms["dr"] = (q_target + w * (r - q_logged), ones)
    return terms


def _resamples(size: int, n_boot: int, seed: int, chunk: int = 100) -> Iterator[np.ndarray]:
    """Row indices of ``n_boot`` bootstrap resamples, [b, size] per chunk; seeded, so every
    estimator given the same seed sees the same resamples."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, chunk):
        yield rng.integers(0, size, size=(min(chunk, n_boot - start), size))


def bootstrap_ci(
    num: np.ndarray, den: np.ndarray, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile interval (1 - alpha) of sum(num) / sum(den) over row resamples; [n] each."""
    if n_boot < 2 or not 0 < alpha < 1:
        raise ValueError(f"need n_boot >= 2 and 0 < alpha < 1, got {n_boot}, {alpha}")
    stats = []
    for idx in _resamples(len(num), n_boot, seed):
        with np.errstate(invalid="ignore", divide="ignore"):  # a resample with sum(den) = 0
            stats.append(num[idx].sum(axis=1) / den[idx].sum(axis=1))
    low, high = np.nanquantile(np.concatenate(stats), [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def estimate(
    reward,
    pscore,
    target_prob,
    q_logged=None,
    q_target=None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Estimate]:
    """IPW, SNIPS and (given a reward model) DR with bootstrap intervals, by estimator name.
    Inputs [n]; the intervals resample logged rows and take target_prob and q as fixed."""
    r, w = _weights(reward, pscore, target_prob)
    q = {} if q_logged is None else _as_arrays(q_logged=q_logged, q_target=q_target, reward=r)
    out = {}
    for name, (num, den) in _row_terms(r, w, q.get("q_logged"), q.get("q_target")).items():
        if den.sum() <= 0:
            raise ValueError("target_prob is 0 on every logged row: nothing to estimate from")
        low, high = bootstrap_ci(num, den, n_boot, seed, alpha)
        out[name] = Estimate(name, float(num.sum() / den.sum()), low, high)
    return out


def logged_ctr(reward, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> Estimate:
    """A policy's own (on-policy) CTR: the mean reward of its log [n], with its interval."""
    r = _as_arrays(reward=reward)["reward"]
    low, high = bootstrap_ci(r, np.ones_like(r), n_boot, seed, alpha)
    return Estimate("logged", float(r.mean()), low, high)


# -- logged frames: target distribution, reward model, evaluation ------------------------------


def check_log(log: pd.DataFrame) -> None:
    """A logged frame has the columns OPE needs; ValueError naming the missing ones."""
    missing = [c for c in LOGGED_COLUMNS if c not in log.columns]
    if missing:
        raise ValueError(f"logged frame lacks columns {missing} (needs {list(LOGGED_COLUMNS)})")


def action_dist(log: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """A logging policy's action distribution per position, [item_id, position] (each column
    sums to 1), and how it was obtained: ``"propensity"`` or ``"frequency"``.

    Where every (item, position) was logged with one constant propensity that sums to 1 per
    position (a fixed policy: OBD's uniform random log, 1/80 each), those are the exact
    probabilities. Otherwise the policy changed while it logged. OBD's Bernoulli-TS log is such
    a case: it was updated every few minutes as clicks came in, so one (item, position) carries
    up to ~300 different propensities over the week. Averaging the logged propensities would be
    biased upwards (an item is logged more often while its propensity is high), so the table is
    then the empirical frequency of each item at each position: an unbiased estimate of the
    policy's week-averaged, context-free distribution (OBD's BTS ignores the user).
    """
    check_log(log)
    cells = log.groupby([n.ITEM_ID, POSITION])[PSCORE]
    table = cells.first().unstack(fill_value=0.0)
    if (cells.nunique() == 1).all() and np.allclose(table.sum(axis=0), 1.0):
        return table, "propensity"
    counts = cells.size().unstack(fill_value=0)
    return counts / counts.sum(axis=0), "frequency"


def _lookup(table: pd.DataFrame, log: pd.DataFrame) -> np.ndarray:
    """``table[item_id, position]`` for every logged row [n]; 0 where the table lacks it."""
    rows = table.index.get_indexer(log[n.ITEM_ID])
    cols = table.columns.get_indexer(log[POSITION])
    values = table.to_numpy(dtype=np.float64)[rows, cols]
    return np.where((rows >= 0) & (cols >= 0), values, 0.0)


@dataclass(frozen=True)
class RewardModelConfig:
    """The DR reward model: per-(item, position) CTR shrunk towards its position's CTR."""

    prior_strength: float = 100.0  # the position's CTR counts as this many impressions
    folds: int = 2  # cross-fitting: each row's reward comes from a model fitted on other rows
    seed: int = 0


def click_table(log: pd.DataFrame, like: pd.DataFrame, prior_strength: float) -> pd.DataFrame:
    """Beta-binomial smoothed CTR [item_id, position] on ``like``'s index and columns:
    (clicks + m * position_ctr) / (impressions + m). No validation set is needed, and items
    with few impressions stay near their position's CTR."""
    grouped = log.groupby([n.ITEM_ID, POSITION])[CLICK]
    shape = {"index": like.index, "columns": like.columns, "fill_value": 0.0}
    clicks = grouped.sum().unstack(fill_value=0).reindex(**shape)
    shown = grouped.size().unstack(fill_value=0).reindex(**shape)
    pos = log.groupby(POSITION)[CLICK].mean().reindex(like.columns, fill_value=0.0)
    return (clicks + prior_strength * pos) / (shown + prior_strength)


def cross_fit_rewards(
    log: pd.DataFrame, dist: pd.DataFrame, cfg: RewardModelConfig
) -> tuple[np.ndarray, np.ndarray]:
    """``q_logged`` [n] and ``q_target`` [n] for DR, cross-fitted over ``cfg.folds`` random
    folds so that no row's own click enters its predicted reward (that would bias DR towards
    the logging policy's CTR). ``dist`` [item_id, position]: the target's distribution."""
    fold = np.random.default_rng(cfg.seed).permutation(len(log)) % cfg.folds
    q_logged, q_target = np.zeros(len(log)), np.zeros(len(log))
    for f in range(cfg.folds):
        rows = fold == f
        table = click_table(log[~rows], dist, cfg.prior_strength)
        q_logged[rows] = _lookup(table, log[rows])
        per_position = (dist * table).sum(axis=0)  # [position]: expected reward under target
        q_target[rows] = per_position.reindex(log[POSITION][rows]).fillna(0.0).to_numpy()
    return q_logged, q_target


def evaluate_policy(
    log: pd.DataFrame,
    dist: pd.DataFrame,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    reward_model: RewardModelConfig | None = None,
) -> dict[str, Estimate]:
    """IPW, SNIPS and DR estimates of the CTR of a target policy with per-position action
    distribution ``dist`` [item_id, position], from another policy's logged frame."""
    check_log(log)
    item_ids = dist.index.union(pd.Index(log[n.ITEM_ID].unique()))
    positions = dist.columns.union(pd.Index(log[POSITION].unique()))
    dist = dist.reindex(index=item_ids, columns=positions, fill_value=0.0)
    q_logged, q_target = cross_fit_rewards(log, dist, reward_model or RewardModelConfig())
    return estimate(
        log[CLICK].to_numpy(),
        log[PSCORE].to_numpy(),
        _lookup(dist, log),
        q_logged,
        q_target,
        n_boot=n_boot,
        seed=seed,
        alpha=alpha,
    )


# -- the platform's own log -----------------------------------------------------------------

POLICY_COLUMN = "policy"
REQUEST_COLUMN = "request_id"


TARGET_PREFIX = "p_"


def target_column(policy: str) -> str:
    """The own log's column with ``policy``'s probability of each logged slot's prefix."""
    return f"{TARGET_PREFIX}{policy}"


def impression_log(events: Iterable[Mapping[str, Any]]) -> tuple[pd.DataFrame, int]:
    """The API's impressions and clicks (event stream entries, as dicts) -> a logged frame: one
    row per impression with ``request_id``, ``policy`` (the one that served), ``item_id``,
    ``position``, ``click`` (1 if any event on that item answered that request: a click, or a
    view/cart/purchase posted with its ``request_id``), ``propensity_score`` and ``p_<policy>``
    for every policy the impression carries. Both are probabilities of the slate's *prefix*
    (this slot and every slot above it as shown: the product of the slots' conditional
    probabilities), so a slot's click is weighted as the reward of a sequence of choices
    (the RIPS estimator, McInerney et al., KDD 2020): weighting each slot by its conditional
    probability alone would credit a target with slots it reaches only after the logging
    policy's exploration above them. Also returns how
    many impressions were left out because they carry no per-policy probabilities (search
    results, degraded answers, or logged before these existed)."""
    rows, clicked, skipped = [], set(), 0
    for e in events:
        kind, rid = e.get(n.EVENT_TYPE), e.get(n.REQUEST_ID)
        if rid is None:
            continue
        if kind != n.EventType.IMPRESSION.value:  # a click, view, cart... answering the request
            clicked.add((rid, e.get(n.ITEM_ID)))
        else:
            probs = e.get(n.PROPENSITIES)
            if not probs:
                skipped += 1
                continue
            row = {
                REQUEST_COLUMN: rid,
                POLICY_COLUMN: e.get(n.POLICY),
                n.ITEM_ID: e.get(n.ITEM_ID),
                POSITION: e.get(n.POSITION),
                PSCORE: e.get(n.PROPENSITY),
            }
            rows.append(row | {target_column(p): v for p, v in probs.items()})
    log = pd.DataFrame(rows)
    if log.empty:
        return log, skipped
    pairs = zip(log[REQUEST_COLUMN], log[n.ITEM_ID], strict=True)
    log[CLICK] = [int(pair in clicked) for pair in pairs]
    log = log.sort_values([REQUEST_COLUMN, POSITION], kind="stable").reset_index(drop=True)
    probs = [PSCORE, *(c for c in log.columns if c.startswith(TARGET_PREFIX))]
    log[probs] = log.groupby(REQUEST_COLUMN)[probs].cumprod()  # of the slate's prefix
    return log, skipped


def own_log_check(
    log: pd.DataFrame,
    behavior: str,
    target: str,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> PolicyCheck:
    """Estimate ``target``'s CTR from the impressions ``behavior`` served (an
    :func:`impression_log` frame) with the target's exact per-slot probabilities, beside the
    target's own logged CTR where it served too. DR's reward model is the cross-fitted
    per-(item, position) CTR; its expectation under the target uses the target's
    importance-weighted (item, position) frequencies in the behaviour log."""
    served = sorted(log[POLICY_COLUMN].unique()) if not log.empty else []
    if behavior not in served:
        raise ValueError(f"no impressions served by {behavior!r} in the log (it has {served})")
    column = target_column(target)
    if column not in log.columns:
        raise ValueError(f"the log has no probabilities for {target!r}")
    rows = log[log[POLICY_COLUMN] == behavior].reset_index(drop=True)
    target_prob = rows[column].to_numpy(dtype=np.float64)
    weight = rows.assign(w=target_prob / rows[PSCORE].to_numpy(dtype=np.float64))
    cells = weight.groupby([n.ITEM_ID, POSITION])["w"].sum().unstack(fill_value=0.0)
    dist = cells / cells.sum(axis=0).replace(0.0, 1.0)
    q_logged, q_target = cross_fit_rewards(rows, dist, RewardModelConfig(seed=seed))
    own = log[log[POLICY_COLUMN] == target]
    return PolicyCheck(
        behavior=behavior,
        target=target,
        rows=len(rows),
        clicks=int(rows[CLICK].sum()),
        target_dist="exact per logged slot",
        logged=None
        if own.empty
        else logged_ctr(own[CLICK].to_numpy(), n_boot=n_boot, seed=seed, alpha=alpha),
        estimates=estimate(
            rows[CLICK].to_numpy(),
            rows[PSCORE].to_numpy(),
            target_prob,
            q_logged,
            q_target,
            n_boot=n_boot,
            seed=seed,
            alpha=alpha,
        ),
    )


# -- the Open Bandit Dataset check -------------------------------------------------------------


def load_obd(shared_data_dir: Path, policy: str, features: bool = False) -> pd.DataFrame:
    """One logging policy's log from the Open Bandit Dataset sample (ZOZOTOWN, campaign "all",
    10,000 rows, 80 items, positions 1-3), in time order; with ``features``, also the hashed
    user features and the 80 user-item affinities."""
    if policy not in OBD_POLICIES:
        raise ValueError(f"unknown OBD policy {policy!r}; one of {OBD_POLICIES}")
    path = Path(shared_data_dir) / OBD_DIR / policy / "all.csv"
    if not path.exists():
        raise FileNotFoundError(f"no Open Bandit Dataset log at {path}")
    columns = None if features else ["timestamp", *LOGGED_COLUMNS]
    log = pd.read_csv(path, usecols=columns)
    log = log.drop(columns=[c for c in log.columns if c.startswith("Unnamed")])
    log["timestamp"] = pd.to_datetime(log["timestamp"], utc=True)
    return log.sort_values("timestamp", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class PolicyCheck:
    """A target policy's OPE estimates from a behaviour log, beside its own logged CTR."""

    behavior: str
    target: str
    rows: int  # behaviour log rows the estimates use
    clicks: int  # clicks among them
    target_dist: str  # how the target's action distribution was obtained (see action_dist)
    logged: Estimate | None  # the target's on-policy CTR from its own log (None: none logged)
    estimates: dict[str, Estimate]


def obd_check(
    shared_data_dir: Path,
    behavior: str = "random",
    target: str = "bts",
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> PolicyCheck:
    """Estimate ``target``'s CTR from ``behavior``'s OBD log and set it beside ``target``'s own
    logged CTR. Both logs ran side by side over the same week, so they should agree within
    their intervals. The intervals resample the behaviour log only and take the target's
    estimated distribution as known; resampling the target's log as well left the IPW
    interval on OBD as wide as before (0.0051), so that noise is small beside the clicks'."""
    if behavior == target:
        raise ValueError("behaviour and target policy are the same: nothing off-policy to do")
    log, target_log = load_obd(shared_data_dir, behavior), load_obd(shared_data_dir, target)
    dist, how = action_dist(target_log)
    return PolicyCheck(
        behavior=behavior,
        target=target,
        rows=len(log),
        clicks=int(log[CLICK].sum()),
        target_dist=how,
        logged=logged_ctr(target_log[CLICK].to_numpy(), n_boot=n_boot, seed=seed, alpha=alpha),
        estimates=evaluate_policy(log, dist, n_boot=n_boot, seed=seed, alpha=alpha),
    )


def obd_figures(shared_data_dir: Path) -> dict[str, float]:
    """Bench figures: BTS's logged CTR and its IPW/SNIPS/DR estimates from the random log,
    each with a 95% interval (1000 resamples, seed 0); a second or so."""
    check = obd_check(shared_data_dir, "random", "bts")
    out: dict[str, float] = {}
    for key, est in [("logged", check.logged), *check.estimates.items()]:
        prefix = f"ope_obd_bts_{key}_ctr"
        out[prefix] = round(est.value, 6)
        out[f"{prefix}_ci_low"] = round(est.ci_low, 6)
        out[f"{prefix}_ci_high"] = round(est.ci_high, 6)
    out["ope_obd_rows"] = check.rows
    return out
