"""Scoring-API figures for ``make bench``, measured in the same run against Feast's own server.

- ``/v1/recommend/{user}?k=20`` on our API (uvicorn, 1 worker) under a loopback load generator;
- ``feast serve`` (1 worker, ``--max-requests 0`` so it never recycles mid-run) answering the
  hydrate read of the same request: FeatureService ranker_v1 for the same user and as many
  candidate items;
- schema fuzzing of the API (no 5xx) and the explore/exploit replay.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import requests

from core import names as n
from core.redis_server import free_port
from core.settings import ROOT, Settings

LATENCY_CALLS = 300
LOAD_CALLS = 600
LOAD_CLIENTS = 4
API_KEY = "bench-key"


def _env(settings: Settings, artifacts: Path) -> dict[str, str]:
    return {
        **os.environ,
        **settings.feast_env(),
        "IG_ARTIFACTS_DIR": str(artifacts),
        "IG_API_KEY": API_KEY,
        "IG_EVENTS_STREAM": "bench:api:events",
        "IG_CATALOGUE_KEY": "bench:api:catalogue",  # the fuzzer puts items: its own catalogue
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": "1",
    }


def _wait(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {url}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server not ready in {timeout} s: {url}")


def _measure(call: Callable[[requests.Session, int], requests.Response], n_users: int):
    """(p50 ms, p99 ms) at one client, then req/s with LOAD_CLIENTS clients (closed loop)."""
    session = requests.Session()
    for i in range(20):  # warm-up
        call(session, i % n_users)
    lat = []
    for i in range(LATENCY_CALLS):
        t = time.perf_counter()
        r = call(session, i % n_users)
        lat.append(time.perf_counter() - t)
        r.raise_for_status()
    sessions = [requests.Session() for _ in range(LOAD_CLIENTS)]

    def worker(c: int) -> int:
        errors = 0
        for i in range(c, LOAD_CALLS, LOAD_CLIENTS):
            try:
                errors += call(sessions[c], i % n_users).status_code != 200
            except requests.RequestException:
                errors += 1
        return errors

    t = time.perf_counter()
    with ThreadPoolExecutor(LOAD_CLIENTS) as pool:
        errors = sum(pool.map(worker, range(LOAD_CLIENTS)))
    rps = LOAD_CALLS / (time.perf_counter() - t)
    ms = np.asarray(lat) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), rps, errors


def _paired(
    a: Callable[[requests.Session, int], requests.Response],
    b: Callable[[requests.Session, int], requests.Response],
    n_users: int,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(p50 ms, p99 ms) of ``a`` and of ``b``, called alternately for the same users, so that
    whatever else the machine does at the time weighs on both alike."""
    session = requests.Session()
    lat: dict[int, list[float]] = {0: [], 1: []}
    for i in range(20 + LATENCY_CALLS):
        for side in (0, 1) if i % 2 else (1, 0):  # which goes first alternates too
            t = time.perf_counter()
            (a, b)[side](session, i % n_users).raise_for_status()
            if i >= 20:  # after a warm-up
                lat[side].append(time.perf_counter() - t)
    ms = [np.asarray(lat[s]) * 1000 for s in (0, 1)]
    return tuple(  # type: ignore[return-value]
        (float(np.percentile(m, 50)), float(np.percentile(m, 99))) for m in ms
    )


def _counters(url: str, name: str) -> int:
    """The value of a counter on a Prometheus ``/metrics`` page."""
    for line in requests.get(url, timeout=5).text.splitlines():
        if line.startswith(f"{name} "):
            return int(float(line.split()[1]))
    raise KeyError(f"{name} not on {url}")


FLOOD_CLIENTS = 4


def _flood(base: str, clients: int, flooding: Any, stop: Any, out: Any) -> None:
    """A process of its own: ``clients`` connections sending ``/v1/score`` the most text a
    request may carry (new items with 500-character titles) as fast as they are answered, never
    waiting for ``Retry-After``; puts the status counts on ``out`` when ``stop`` is set."""
    titles = [{"item_id": f"flood-{i}", "title": ("flood text " * 50)[:500]} for i in range(40)]
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def one() -> None:
        session = requests.Session()
        while not stop.is_set():
            r = session.post(f"{base}/v1/score", json={"user_id": "x", "items": titles}, timeout=30)
            with lock:
                statuses[r.status_code] += 1

    threads = [threading.Thread(target=one, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    flooding.set()
    for t in threads:
        t.join()
    out.put(dict(statuses))


def _under_score_flood(
    call: Callable[[requests.Session, int], requests.Response], base: str, n_users: int
) -> dict[str, object]:
    """Recommend latency while FLOOD_CLIENTS connections flood ``/v1/score`` from a process of
    their own (a flooder is another client, not threads sharing the measuring client's GIL)."""
    ctx = multiprocessing.get_context("spawn")
    flooding, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    flooder = ctx.Process(
        target=_flood, args=(base, FLOOD_CLIENTS, flooding, stop, out), daemon=True
    )
    flooder.start()
    try:
        if not flooding.wait(timeout=120):
            raise RuntimeError(f"the flood process did not start (exit code {flooder.exitcode})")
        time.sleep(1.0)  # the flood is under way
        session = requests.Session()
        lat = []
        for i in range(LATENCY_CALLS):
            started = time.perf_counter()
            call(session, i % n_users).raise_for_status()
            lat.append(time.perf_counter() - started)
    finally:
        stop.set()
        statuses = out.get(timeout=60) if flooding.is_set() else {}
        flooder.join(timeout=30)
    ms = np.asarray(lat) * 1000
    return {
        "api_recommend_p50_ms_under_score_flood": round(float(np.percentile(ms, 50)), 3),
        "api_recommend_p99_ms_under_score_flood": round(float(np.percentile(ms, 99)), 3),
        "score_flood_clients": FLOOD_CLIENTS,
        "score_flood_statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def api_figures(settings: Settings, artifacts: Path) -> dict[str, object]:
    from api.bundle import Bundle
    from api.fuzz import fuzz

    bundle = Bundle.load(artifacts / "latest")
    users = random.Random(3).sample(sorted(bundle.users), 50)
    candidates = int(settings.candidates_gnn + settings.candidates_other)
    items = [bundle.ids[r] for r in bundle.popular[:candidates]]
    env = _env(settings, artifacts)
    api_port, uncached_port, feast_port = free_port(), free_port(), free_port()

    def start_api(port: int, ttl_s: float, log: bool = True) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--port",
             str(port), "--workers", "1", "--no-access-log", "--log-level", "warning"],
            cwd=ROOT, env={**env, "IG_ITEM_FEATURE_TTL_S": str(ttl_s),
                           "IG_LOG_IMPRESSIONS": str(log).lower()},
        )  # fmt: skip

    nolog_port = free_port()
    api = start_api(api_port, settings.item_feature_ttl_s)
    uncached = start_api(uncached_port, 0)
    nolog = start_api(nolog_port, settings.item_feature_ttl_s, log=False)
    feast = subprocess.Popen(
        [str(Path(sys.executable).parent / "feast"), "serve", "--port", str(feast_port),
         "--workers", "1", "--max-requests", "0", "--no-access-log"],
        cwd=settings.feature_repo, env=env, stdout=subprocess.DEVNULL,
        stderr=open(settings.data_dir / "feast_serve.log", "wb"),  # noqa: SIM115
    )  # fmt: skip
    out: dict[str, object] = {}
    try:
        base, feast_base = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{feast_port}"
        _wait(f"{base}/ready", api)
        _wait(f"http://127.0.0.1:{uncached_port}/ready", uncached)
        _wait(f"http://127.0.0.1:{nolog_port}/ready", nolog)
        _wait(f"{feast_base}/health", feast)

        def recommend_at(port: int) -> Callable[[requests.Session, int], requests.Response]:
            def call(s: requests.Session, i: int) -> requests.Response:
                url = f"http://127.0.0.1:{port}/v1/recommend/{users[i]}"
                return s.get(url, params={"k": 20}, timeout=10)

            return call

        def feast_read(s: requests.Session, i: int) -> requests.Response:
            body = {
                "feature_service": n.RANKER_V1,
                "full_feature_names": True,
                "entities": {n.USER_ID: [users[i]] * len(items), n.ITEM_ID: items},
            }
            return s.post(f"{feast_base}/get-online-features", json=body, timeout=10)

        sample = recommend_at(api_port)(requests.Session(), 0).json()
        assert len(sample["items"]) == 20 and not sample["degraded"], sample
        f50, f99, frps, ferrors = _measure(feast_read, len(users))
        p50, p99, rps, errors = _measure(recommend_at(api_port), len(users))
        u50, u99, urps, uerrors = _measure(recommend_at(uncached_port), len(users))
        n50, n99, nrps, _ = _measure(recommend_at(nolog_port), len(users))
        # the log's cost: the two APIs called alternately (sequential runs differ by more
        # than 10% on a busy 2-core machine whatever the log does)
        (l50, l99), (m50, m99) = _paired(
            recommend_at(api_port), recommend_at(nolog_port), len(users)
        )
        time.sleep(1.0)  # the impression log writes every 50 ms
        logged = _counters(f"{base}/metrics", "ig_impressions_logged_total")
        dropped = _counters(f"{base}/metrics", "ig_impressions_dropped_total")
        out |= {
            "api_recommend_p50_ms": round(p50, 3),
            "api_recommend_p99_ms": round(p99, 3),
            "api_recommend_rps": round(rps, 1),
            "api_recommend_errors": errors,
            "api_item_feature_ttl_s": settings.item_feature_ttl_s,
            "api_recommend_uncached_p50_ms": round(u50, 3),
            "api_recommend_uncached_p99_ms": round(u99, 3),
            "api_recommend_uncached_rps": round(urps, 1),
            "api_recommend_uncached_errors": uerrors,
            "feast_server_p50_ms": round(f50, 3),
            "feast_server_p99_ms": round(f99, 3),
            "feast_server_rps": round(frps, 1),
            "feast_server_errors": ferrors,
            "feast_server_rows_per_request": len(items),
            "api_over_feast_server_p50": round(p50 / f50, 3),
            "api_uncached_over_feast_server_p50": round(u50 / f50, 3),
            "api_load_clients": LOAD_CLIENTS,
            # The same API without impression logging (IG_LOG_IMPRESSIONS=false): the cost of
            # the log is the ratio (target: within 10%).
            "api_recommend_nolog_p50_ms": round(n50, 3),
            "api_recommend_nolog_p99_ms": round(n99, 3),
            "api_recommend_nolog_rps": round(nrps, 1),
            "api_recommend_paired_log_p50_ms": round(l50, 3),
            "api_recommend_paired_log_p99_ms": round(l99, 3),
            "api_recommend_paired_nolog_p50_ms": round(m50, 3),
            "api_recommend_paired_nolog_p99_ms": round(m99, 3),
            "api_logging_over_nolog_p50": round(l50 / m50, 3),
            "api_logging_over_nolog_p99": round(l99 / m99, 3),
            "impressions_logged": logged,
            "impressions_dropped": dropped,
        }
        out |= _under_score_flood(recommend_at(api_port), base, len(users))
        print(f"api: {json.dumps(out)}", flush=True)
        report = fuzz(base, API_KEY, max_examples=25)
        out |= {
            "api_fuzz_cases": report.cases,
            "api_fuzz_5xx": len(report.server_errors),
            "api_fuzz_statuses": {str(k): v for k, v in sorted(report.by_status.items())},
        }
        for line in report.server_errors[:5]:
            print(f"fuzz 5xx: {line}", file=sys.stderr)
    finally:
        for proc in (api, uncached, nolog, feast):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    return out


def bandit_figures(settings: Settings, artifacts: Path, k: int = 10) -> dict[str, object]:
    """Replay on the held-out (test) period: each test user, in order of their first test
    event, is shown k of their top-100 GNN candidates; a click is a shown item they went on to
    interact with."""
    from api.bundle import Bundle
    from models.data import load_events, time_split
    from models.explore import ExploreConfig, replay

    bundle = Bundle.load(artifacts / "latest")
    split = time_split(load_events(settings.canonical_dir / settings.dataset))
    history = pd.concat([split.train, split.val])
    counts = history.groupby(n.USER_ID).size()
    test = split.test[split.test[n.USER_ID].isin(bundle.users)]
    test = test[test[n.ITEM_ID].isin(bundle.index)]
    first = test.groupby(n.USER_ID)[n.EVENT_TIMESTAMP].min().sort_values()
    truth = test.groupby(n.USER_ID)[n.ITEM_ID].agg(set)
    rounds = []
    for user in first.index:
        seen = set(bundle.seen_idx(user).tolist())  # what the API filters out
        top, _ = bundle.retrieve(bundle.user_vectors[bundle.users[user]], 100 + len(seen))
        cands = np.array([r for r in top.tolist() if r not in seen][:100], dtype=np.int64)
        wanted = {bundle.index[i] for i in truth[user]} - seen
        rounds.append((cands, wanted, int(counts.get(user, 0))))
    result = replay(rounds, len(bundle.ids), k, ExploreConfig(), seed=0)
    out: dict[str, object] = {"bandit_rounds": len(rounds), "bandit_k": k}
    for policy, figures in result.items():
        out[f"bandit_reward_{policy}"] = figures["reward"]
        out[f"bandit_coverage_{policy}"] = round(figures["coverage"], 4)
    return out
