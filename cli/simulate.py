"""``ig simulate``: the closed feedback loop, end to end, on simulated shoppers of a real log.

Shoppers are trained users with held-out purchases; what they click is hidden from the
recommender (models/simulation.py). For each policy of ``models.explore.POLICIES`` the real
stack runs on its own: a private redis-server loaded with the same materialized online store,
the live job (``ig stream``) and the API (uvicorn) as subprocesses. Per round, some shoppers ask
``GET /v1/recommend`` with that policy, click by the hidden model, the clicks are posted with
their ``request_id`` (``POST /v1/events``), and the round ends when the live job has turned the
answers' impressions and the clicks into features (consumer group: nothing undelivered, nothing
pending). Written: ``simulation.json`` and two PNGs (cumulative clicks, cumulative regret).

Every policy starts from the same state, built once: a Feast project applied and materialized
from the offline store into a private Redis (or, with ``materialized``, one that already holds
it), and a live job's recovery snapshot taken after it replayed the backfilled log, so no
policy pays for that replay. Nothing touches the project's own Redis, registry or offline store.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.procs import child_env, ig_command, start_live_job, stop
from core import names as n
from core.redis_server import RedisServer, free_port
from core.settings import ROOT, Settings, get_settings
from models.explore import GREEDY
from models.simulation import ShopConfig

if TYPE_CHECKING:
    import pandas as pd

SIM_STREAM = "ig:sim:events"
SIM_DEAD = "ig:sim:dead_letters"
CLICKS_PNG = "cumulative_clicks.png"
REGRET_PNG = "cumulative_regret.png"
RESULT_JSON = "simulation.json"
IMPRESSIONS = "impressions.parquet"  # every policy's impression log (ig evaluate-policy --data)
OPE_BEHAVIORS = ("epsilon_greedy", "thompson")  # the log others are estimated from: the first run


class SimulationError(RuntimeError):
    """The simulation cannot run (no model, no backfill) or a component failed."""


@dataclass(frozen=True)
class SimPlan:
    """What ``ig simulate`` runs (its options)."""

    rounds: int = 40
    shoppers_per_round: int = 20
    k: int = 10
    # A fixed share gives every policy the same exploration budget (Thompson: k * share slots;
    # epsilon-greedy: each slot with that probability). "auto" adapts it to the history, which
    # for Online Retail's rich histories leaves Thompson under one slot of ten.
    explore: str = "0.2"
    policies: tuple[str, ...] = ()  # empty: every policy of models.explore.POLICIES
    shoppers: int = 100  # the pool the visitors are drawn from
    new_item: str | None = None  # default: the cold item the candidate sources offer most
    seed: int = 0
    round_timeout_s: float = 120.0
    shop: ShopConfig = field(default_factory=ShopConfig)


def register(sub: argparse._SubParsersAction) -> None:
    """``ig simulate``."""
    d = SimPlan()
    p = sub.add_parser(
        "simulate",
        help="simulated shoppers through the real API and live job: clicks, regret, discovery",
    )
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument("--shoppers-per-round", type=int, default=d.shoppers_per_round)
    p.add_argument("--k", type=int, default=d.k, help="items per answer")
    p.add_argument(
        "--explore",
        default=d.explore,
        help="the API's explore parameter for every policy: a share 0..1 (the same budget) or auto",
    )
    p.add_argument(
        "--policies", help="comma-separated (default: every policy of models.explore.POLICIES)"
    )
    p.add_argument("--shoppers", type=int, default=d.shoppers, help="shoppers in the pool")
    p.add_argument(
        "--new-item",
        help="the new item with high hidden appeal (default: the cold item, never trained on, "
        "that the candidate sources offer to the most shoppers)",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", type=Path, help="output folder (default: data/simulation)")
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    from models.explore import POLICIES

    policies = tuple(p.strip() for p in args.policies.split(",")) if args.policies else ()
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        print(f"unknown policies {unknown}; known: {', '.join(POLICIES)}", file=sys.stderr)
        return 2
    if min(args.rounds, args.shoppers_per_round, args.k, args.shoppers) < 1:
        print("--rounds, --shoppers-per-round, --k and --shoppers must be >= 1", file=sys.stderr)
        return 2
    plan = SimPlan(
        rounds=args.rounds,
        shoppers_per_round=args.shoppers_per_round,
        k=args.k,
        explore=args.explore,
        policies=policies,
        shoppers=args.shoppers,
        new_item=args.new_item,
        seed=args.seed,
    )
    settings = get_settings()
    out = args.out or settings.data_dir / "simulation"
    started = time.monotonic()
    try:
        result = run_simulation(settings, plan, out, progress=True)
    except SimulationError as exc:
        print(f"simulate failed: {exc}", file=sys.stderr)
        return 2
    _print_result(result, out, time.monotonic() - started)
    return 1 if any("error" in r for r in result["policies"].values()) else 0


# -- the world: shoppers, the hidden model, the new item --------------------------------------


@dataclass
class World:
    shoppers: list[Any]  # models.simulation.Shopper
    make_shop: Callable[[], Any]  # a fresh models.simulation.Shop (nothing spent)
    new_item: str | None
    new_item_info: dict[str, Any]
    model_version: str


def _world(settings: Settings, artifacts: Path, plan: SimPlan) -> World:
    """Shoppers (trained users with held-out purchases), the hidden click model and the new
    item (a cold item: never trained on; the one most shoppers of its category can reach)."""
    import numpy as np

    from api.bundle import Bundle
    from models.data import load_events, time_split
    from models.simulation import Shop, audience, held_out_shoppers, pick_new_item

    bundle = Bundle.load(artifacts / "latest")
    item_category = dict(zip(bundle.ids, bundle.categories, strict=True))
    excluded = {
        u: {bundle.ids[i] for i in bundle.seen_idx(u).tolist()}
        | {bundle.ids[i] for i in np.flatnonzero(~bundle.available).tolist()}
        for u in bundle.users
    }
    split = time_split(load_events(settings.canonical_dir / settings.dataset))
    everyone = held_out_shoppers(split.test, bundle.users, item_category, excluded)
    if not everyone:
        raise SimulationError("no trained user has held-out purchases: nothing to simulate")
    rng = np.random.default_rng(plan.seed)
    picked = sorted(rng.choice(len(everyone), min(plan.shoppers, len(everyone)), replace=False))
    shoppers = [everyone[i] for i in picked]
    cold_file = artifacts / "latest" / "cold_items.json"
    cold = json.loads(cold_file.read_text()) if cold_file.exists() else []
    cold = [i for i in cold if i in bundle.index and bundle.retrievable[bundle.index[i]]]
    # What the candidate sources offer each shopper (policies only choose among candidates):
    # retrieval by the trained vector, and the popular items every known shopper gets.
    popular = {bundle.ids[i] for i in bundle.popular[: settings.candidates_other].tolist()}
    reach: dict[str, set[str]] = {}
    cold_set = set(cold)
    targets = cold_set | ({plan.new_item} if plan.new_item else set())
    for s in shoppers:
        top, _ = bundle.retrieve(
            bundle.user_vectors[bundle.users[s.user_id]], settings.candidates_gnn
        )
        offered = ({bundle.ids[ix] for ix in top.tolist()} | popular) & targets
        for item in offered - excluded[s.user_id]:
            reach.setdefault(item, set()).add(s.user_id)
    new_item = plan.new_item or pick_new_item(cold, item_category, shoppers, plan.shop, reach)
    if new_item is not None and new_item not in bundle.index:
        raise SimulationError(f"--new-item {new_item}: not in the model's catalogue")
    info: dict[str, Any] = {"item_id": new_item, "cold_items": len(cold)}
    if new_item is not None:
        fans = audience(item_category.get(new_item), shoppers, plan.shop)
        rank = {bundle.ids[ix]: r for r, ix in enumerate(bundle.popular.tolist())}
        info |= {
            "title": bundle.titles[bundle.index[new_item]],
            "category": item_category.get(new_item),
            "audience": len(fans),
            "cold": new_item in cold_set,
            "audience_it_is_a_candidate_for": len(fans & reach.get(new_item, set())),
            "popularity_rank": rank.get(new_item),
            "in_popular_candidates": new_item in popular,
        }

    def make_shop() -> Shop:
        return Shop(shoppers, bundle.ids, bundle.categories, plan.shop, excluded, new_item)

    return World(shoppers, make_shop, new_item, info, bundle.version)


# -- the shared starting state ---------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    """What every policy starts from: settings (Feast project, registry in ``warm``), the
    online store as a Redis dump, and a data folder with the live job's recovery snapshot."""

    settings: Settings
    dump: Path
    warm: Path


def _prepare_base(
    settings: Settings, work: Path, materialized: RedisServer | None, log: Callable[[str], None]
) -> Base:
    """Apply and materialize a fresh Feast project from the offline store into a private
    Redis (unless ``materialized`` already holds ``settings``' project), then let the live job
    replay the backfilled log once and snapshot its state."""
    from core.feast_store import feast_apply, materialize, open_store

    server, proc = materialized, None
    if materialized is None:
        base = work / "base"
        (base / "offline").mkdir(parents=True)
        for view in n.VIEW_FEATURES:  # read only: feast apply and materialize
            if (settings.offline_dir / view).exists():
                (base / "offline" / view).symlink_to((settings.offline_dir / view).resolve())
        shutil.copy2(settings.offline_dir / n.BACKFILL_MANIFEST, base / "offline")
        server = RedisServer(free_port(), work / "redis-base")
        proc = server.start(daemonize=False)
        settings = _private(settings, base, server.port, f"sim_{uuid.uuid4().hex[:8]}")
        t = time.monotonic()
        with _feast_env(settings):
            feast_apply(settings)
            materialize(open_store(settings), settings)
        log(f"online store materialized in {time.monotonic() - t:.0f} s")
    assert server is not None
    try:
        warm = work / "warm"
        for view in n.VIEW_FEATURES:
            (warm / "offline" / view).mkdir(parents=True)
        shutil.copy2(settings.data_dir / "registry.db", warm / "registry.db")
        shutil.copy2(settings.offline_dir / n.BACKFILL_MANIFEST, warm / "offline")
        warm_settings = settings.model_copy(
            update={"data_dir": warm, "events_stream": SIM_STREAM, "dead_letter_stream": SIM_DEAD}
        )
        t = time.monotonic()
        job = [*ig_command("stream"), "-r", str(warm / "recovery"), "--idle-stop", "1"]
        done = subprocess.run(
            [*job, "--report-s", "3600"],
            cwd=ROOT,
            env=child_env(warm_settings),
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0:
            tail = (done.stdout + done.stderr)[-3000:]
            raise SimulationError(f"the live job could not rebuild its state:\n{tail}")
        log(f"live job state rebuilt from the backfilled log in {time.monotonic() - t:.0f} s")
        server.client(timeout=120).save()
        dump = work / "base.rdb"
        shutil.copy2(server.workdir / "dump.rdb", dump)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    return Base(settings, dump, warm)


def _private(settings: Settings, data_dir: Path, port: int, project: str | None = None) -> Settings:
    update: dict[str, Any] = {
        "data_dir": data_dir,
        "redis_host": "127.0.0.1",
        "redis_port": port,
        "redis_password": "",
        "events_stream": SIM_STREAM,
        "dead_letter_stream": SIM_DEAD,
    }
    if project is not None:
        update["feast_project"] = project
    return settings.model_copy(update=update)


@contextlib.contextmanager
def _feast_env(settings: Settings) -> Iterator[None]:
    """Feast reads its configuration from the environment: set it for the block, then put
    the caller's environment back."""
    keys = settings.feast_env()
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# -- one policy ------------------------------------------------------------------------------


@dataclass
class _Stack:
    """A policy's private Redis, live job and API."""

    settings: Settings
    redis: RedisServer
    stream: subprocess.Popen
    api: subprocess.Popen
    base_url: str
    api_key: str
    logs: dict[str, Path]

    def tail(self, name: str, chars: int = 2000) -> str:
        path = self.logs[name]
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@contextlib.contextmanager
def _stack(base: Base, work: Path, artifacts: Path) -> Iterator[_Stack]:
    folder = work
    shutil.copytree(base.warm, folder, symlinks=True)
    (folder / "redis").mkdir()
    shutil.copy2(base.dump, folder / "redis" / "dump.rdb")
    server = RedisServer(free_port(), folder / "redis")
    procs: list[subprocess.Popen] = []
    redis_proc = server.start(daemonize=False)
    if redis_proc is not None:
        procs.append(redis_proc)
    settings = _private(base.settings, folder, server.port)
    key = uuid.uuid4().hex
    port = free_port()
    logs = {"stream": folder / "stream.log", "api": folder / "api.log"}
    try:
        procs.append(start_live_job(settings, folder / "recovery", logs["stream"]))
        env = child_env(
            settings,
            IG_ARTIFACTS_DIR=str(artifacts),
            IG_API_KEY=key,
            IG_LOG_IMPRESSIONS="true",
        )
        with open(logs["api"], "wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "api.app:create_app",
                        "--factory",
                        "--port",
                        str(port),
                        "--workers",
                        "1",
                        "--no-access-log",
                        "--log-level",
                        "warning",
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip
            )
        stack = _Stack(
            settings, server, procs[-2], procs[-1], f"http://127.0.0.1:{port}", key, logs
        )
        _wait_ready(stack)
        yield stack
    finally:
        for proc in reversed(procs):  # API, live job, then Redis
            stop(proc)


def _wait_ready(stack: _Stack, timeout: float = 240.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc, name in ((stack.stream, "stream"), (stack.api, "api")):
            if proc.poll() is not None:
                raise SimulationError(f"the {name} process exited:\n{stack.tail(name)}")
        try:
            if requests.get(f"{stack.base_url}/ready", timeout=2).status_code == 200:
                return  # the live job needs no wait: the first round waits until it caught up
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise SimulationError(f"the API was not ready in {timeout:.0f} s:\n{stack.tail('api')}")


def _wait_caught_up(stack: _Stack, written: int, timeout: float) -> None:
    """Until the stream holds ``written`` entries (the API writes impressions in the
    background) and the live job has delivered and acknowledged all of them."""
    from core.bus import group_progress

    s = stack.settings
    client = stack.redis.client(timeout=10)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.stream.poll() is not None:
            raise SimulationError(f"the live job exited:\n{stack.tail('stream')}")
        if client.exists(s.events_stream) and client.xlen(s.events_stream) >= written:
            p = group_progress(client, s.events_stream, s.consumer_group)
            if p.lag == 0 and p.pending == 0:
                return
        time.sleep(0.02)
    have = client.xlen(s.events_stream) if client.exists(s.events_stream) else 0
    raise SimulationError(
        f"the live job did not catch up in {timeout:.0f} s ({have} of {written} entries in "
        f"{s.events_stream}):\n{stack.tail('stream')}"
    )


def _run_policy(
    stack: _Stack,
    policy: str,
    plan: SimPlan,
    world: World,
    visitors: list[Any],
    progress: bool,
) -> dict[str, Any]:
    import requests
    from tqdm import tqdm

    from models.simulation import Trace, click_uniforms

    shop = world.make_shop()
    trace = Trace(policy)
    session = requests.Session()
    headers = {"X-API-Key": stack.api_key}
    written = 0
    clicked_items: set[str] = set()
    served_as: set[str] = set()
    params: dict[str, str | int] = {"k": plan.k, "explore": plan.explore, "policy": policy}
    bar = tqdm(visitors, desc=f"{policy:>15}", unit="round", disable=not progress, leave=True)
    for round_no, who in enumerate(bar, start=1):
        answers, clicks = [], []
        for j in who.tolist():
            user = world.shoppers[j].user_id
            r = session.get(
                f"{stack.base_url}/v1/recommend/{user}",
                params=params,
                timeout=30,
            )
            if r.status_code != 200:
                raise SimulationError(f"GET /v1/recommend ({policy}): {r.status_code} {r.text}")
            body = r.json()
            if body["degraded"]:
                raise SimulationError(f"a degraded answer (Redis lost?):\n{stack.tail('api')}")
            served_as.add(body["policy"])
            items = [i["item_id"] for i in body["items"]]
            expected = shop.expected_clicks(user, items)
            best = shop.best_expected(user, plan.k)
            hit = shop.clicks(user, items, click_uniforms(plan.seed, round_no, j, len(items)))
            explored = sum(bool(i["explored"]) for i in body["items"])
            answers.append((items, hit, expected, best, explored))
            clicks += [
                {
                    n.USER_ID: user,
                    n.ITEM_ID: item,
                    n.EVENT_TYPE: n.EventType.CLICK.value,
                    n.REQUEST_ID: body["request_id"],
                }
                for item, c in zip(items, hit.tolist(), strict=True)
                if c
            ]
            written += len(items)  # the impressions the API logs for this answer
        if clicks:  # after every answer of the round: the round's answers see one state
            r = session.post(
                f"{stack.base_url}/v1/events", json={"events": clicks}, headers=headers, timeout=30
            )
            if r.status_code != 202:
                raise SimulationError(f"POST /v1/events: {r.status_code} {r.text}")
            written += len(clicks)
            clicked_items.update(c[n.ITEM_ID] for c in clicks)
        trace.record(round_no, answers, world.new_item)
        _wait_caught_up(stack, written, plan.round_timeout_s)
        bar.set_postfix(clicks=sum(trace.clicks), regret=f"{sum(trace.regret):.2f}")
    bar.close()
    out = trace.summary()
    out["served_as"] = sorted(served_as)
    out["stream"] = _stream_counts(stack)
    out["feedback_online"] = _online_feedback(stack.settings, sorted(clicked_items))
    return out


def _stream_counts(stack: _Stack) -> dict[str, int]:
    """What reached the event stream, by event type, and the dead letters."""
    s = stack.settings
    client = stack.redis.client(timeout=30)
    counts: dict[str, int] = {}
    for _, fields in client.xrange(s.events_stream, "-", "+"):
        kind = json.loads(fields[b"event"]).get(n.EVENT_TYPE, "?")
        counts[kind] = counts.get(kind, 0) + 1
    dead = client.xlen(s.dead_letter_stream) if client.exists(s.dead_letter_stream) else 0
    return {
        "entries": sum(counts.values()),
        "impressions": counts.get(n.EventType.IMPRESSION.value, 0),
        "clicks": counts.get(n.EventType.CLICK.value, 0),
        "dead_letters": int(dead),
    }


def _online_feedback(settings: Settings, clicked: list[str]) -> dict[str, Any]:
    """item_feedback read online through Feast for the items clicked in the run: how many of
    them the live job wrote clicks for."""
    if not clicked:
        return {"clicked_items": 0, "with_online_clicks": 0, "online_clicks": 0.0}
    from core.feast_store import open_store

    with _feast_env(settings):
        store = open_store(settings)
        got = store.get_online_features(
            features=[f"{n.ITEM_FEEDBACK}:{n.CLICKED}", f"{n.ITEM_FEEDBACK}:{n.EXAMINED}"],
            entity_rows=[{n.ITEM_ID: i} for i in clicked],
        ).to_dict()
    values = [float(v or 0.0) for v in got[n.CLICKED]]
    return {
        "clicked_items": len(clicked),
        "with_online_clicks": sum(v > 0 for v in values),
        "online_clicks": round(sum(values), 6),
        "online_examined": round(sum(float(v or 0.0) for v in got[n.EXAMINED]), 6),
    }


# -- the whole run ---------------------------------------------------------------------------


def check_inputs(settings: Settings, artifacts: Path | None = None) -> Path:
    """The artifacts folder to serve (default: settings'); :class:`SimulationError` without a
    trained model there or without a backfill.

    The simulated shoppers make the test period's purchases, so the model served is the
    evaluated artifact (trained without that period, with its cold items held out): where
    ``latest`` is the served artifact (trained on every event), a folder of the data dir
    (``simulate/artifacts``) whose ``latest`` points at the evaluated one it names."""
    from models.artifact import evaluated_path

    artifacts = artifacts or settings.artifacts_dir
    latest = artifacts / "latest"
    if not (latest / "catalogue.parquet").exists():
        raise SimulationError(f"no trained model under {latest}: run `make train` (or `make demo`)")
    if not (settings.offline_dir / n.BACKFILL_MANIFEST).exists():
        raise SimulationError(
            f"no backfill in {settings.offline_dir} (no {n.BACKFILL_MANIFEST}): run "
            "`make import backfill` (or `make demo`)"
        )
    target = evaluated_path(latest)
    if target == latest:
        return artifacts
    if not (target / "catalogue.parquet").exists():
        raise SimulationError(
            f"{latest} was trained on every event and its evaluated artifact {target} is "
            "missing: run `make train`"
        )
    folder = settings.data_dir / "simulate" / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "latest.tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(target)
    os.replace(link, folder / "latest")
    return folder


def run_simulation(
    settings: Settings,
    plan: SimPlan,
    out: Path | None,
    progress: bool = False,
    materialized: RedisServer | None = None,
    artifacts: Path | None = None,
) -> dict[str, Any]:
    """Run every policy of ``plan`` (default: ``models.explore.POLICIES``) through the real
    API and live job; write ``simulation.json`` and the PNGs to ``out`` (when given).
    ``materialized``: a Redis that already holds ``settings``' materialized project (skips
    apply and materialize); ``artifacts``: the model folder to serve (default: settings')."""
    import pandas as pd

    from models.explore import POLICIES
    from models.simulation import schedule

    artifacts = check_inputs(settings, artifacts)
    policies = plan.policies or tuple(POLICIES)
    log = print if progress else (lambda _: None)
    started = time.monotonic()
    world = _world(settings, artifacts, plan)
    log(
        f"{len(world.shoppers)} shoppers; new item {world.new_item_info.get('item_id')} "
        f"({world.new_item_info.get('title')}): appeals to "
        f"{world.new_item_info.get('audience', 0)} of them, a candidate for "
        f"{world.new_item_info.get('audience_it_is_a_candidate_for', 0)}"
    )
    visitors = schedule(len(world.shoppers), plan.rounds, plan.shoppers_per_round, plan.seed)
    results: dict[str, Any] = {}
    logs: list[pd.DataFrame] = []
    with tempfile.TemporaryDirectory(prefix="ig-sim-") as tmp:
        work = Path(tmp)
        base = _prepare_base(settings, work, materialized, log)
        for policy in policies:
            t = time.monotonic()
            try:
                with _stack(base, work / policy, artifacts) as stack:
                    ready = time.monotonic() - t
                    results[policy] = _run_policy(stack, policy, plan, world, visitors, progress)
                    logs.append(_impression_log(stack))
            except SimulationError as exc:  # one policy's failure: the others still run
                log(f"{policy} failed: {exc}")
                results[policy] = {"policy": policy, "error": str(exc)}
                continue
            results[policy]["startup_s"] = round(ready, 1)
            results[policy]["wall_s"] = round(time.monotonic() - t, 1)
    result = {
        "config": {
            **{k: v for k, v in asdict(plan).items() if k not in ("shop", "policies")},
            "policies": list(policies),
            "shop": asdict(plan.shop),
            "shopper_pool": len(world.shoppers),
            "model_version": world.model_version,
            "dataset": settings.dataset,
            "new_item": world.new_item_info,
        },
        "policies": results,
        "wall_s": round(time.monotonic() - started, 1),
    }
    impressions = pd.concat(logs, ignore_index=True) if logs else pd.DataFrame()
    behavior = next((p for p in OPE_BEHAVIORS if p in results), OPE_BEHAVIORS[0])
    result["ope"] = off_policy_estimates(impressions, behavior)
    if out is not None:
        write_outputs(result, out)
        impressions.to_parquet(out / IMPRESSIONS, index=False)
    return result


def _impression_log(stack: _Stack) -> pd.DataFrame:
    """The run's impressions and attributed clicks as OPE reads them (models.ope)."""
    from cli.policy import stream_events
    from models.ope import impression_log

    client = stack.redis.client(timeout=30)
    return impression_log(stream_events(client, stack.settings.events_stream))[0]


def off_policy_estimates(log: pd.DataFrame, behavior: str) -> dict[str, Any]:
    """Every other policy's CTR estimated from ``behavior``'s impressions (IPW, SNIPS, DR with
    95% bootstrap intervals) beside its own logged CTR in the same simulation: the check that
    OPE on the platform's own logs tells the policies apart as running them does."""
    from models.ope import own_log_check

    if log.empty or behavior not in set(log["policy"]):
        return {"behavior": behavior, "error": f"no impressions served by {behavior}"}
    out: dict[str, Any] = {"behavior": behavior, "rows": int((log["policy"] == behavior).sum())}
    for target in sorted(set(log["policy"]) - {behavior}):
        check = own_log_check(log, behavior, target)
        named = {"logged": check.logged, **check.estimates}
        out[target] = {
            k: [round(e.value, 5), round(e.ci_low, 5), round(e.ci_high, 5)]
            for k, e in named.items()
            if e is not None
        }
    return out


def write_outputs(result: dict[str, Any], out: Path) -> None:
    """``simulation.json`` and the two PNGs (cumulative clicks and regret per round)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_JSON).write_text(json.dumps(result, indent=2) + "\n")
    cfg = result["config"]
    note = (
        f"{cfg['shoppers_per_round']} shoppers/round, k={cfg['k']}, explore={cfg['explore']}, "
        f"{cfg['dataset']}"
    )
    ran = {p: r for p, r in result["policies"].items() if "error" not in r}
    reference = GREEDY if GREEDY in ran else next(iter(ran), None)
    for name, key, label in (
        (CLICKS_PNG, "cumulative_clicks", "cumulative clicks"),
        (REGRET_PNG, "cumulative_regret", "cumulative regret (expected clicks lost)"),
    ):
        # Regret is mostly what no policy can recover (the oracle knows the held-out
        # purchases): a second panel shows each policy's regret minus the reference's.
        panels = 2 if key == "cumulative_regret" and reference else 1
        fig, axes = plt.subplots(panels, 1, figsize=(7, 4.5 * panels), squeeze=False)
        ax = axes[0][0]
        for policy, r in ran.items():
            series = r[key]
            found = r["rounds_to_discovery"]
            tag = f" (new item clicked in round {found})" if found else " (new item not clicked)"
            ax.plot(range(1, len(series) + 1), series, label=f"{policy}{tag}")
            if panels == 2:
                base = ran[reference][key]  # type: ignore[index]
                diff = [a - b for a, b in zip(series, base, strict=True)]
                axes[1][0].plot(range(1, len(diff) + 1), diff, label=policy)
        ax.set_ylabel(label)
        ax.set_title(f"{label}: {note}", fontsize=9)
        if panels == 2:
            axes[1][0].set_ylabel(f"cumulative regret minus {reference}'s")
            axes[1][0].axhline(0, color="grey", lw=0.8)
        for (panel,) in axes:
            panel.set_xlabel("round")
            panel.grid(alpha=0.3)
            panel.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)


def _print_result(result: dict[str, Any], out: Path, wall_s: float) -> None:
    from rich.console import Console
    from rich.table import Table

    cfg = result["config"]
    table = Table(
        title=f"ig simulate: {cfg['rounds']} rounds x {cfg['shoppers_per_round']} shoppers, "
        f"k={cfg['k']}, explore={cfg['explore']}",
        caption=f"new item {cfg['new_item'].get('item_id')} ({cfg['new_item'].get('title')}); "
        f"{wall_s:.0f} s; {out}",
    )
    for col in ("policy", "clicks", "expected", "oracle", "regret", "explored", "discovered"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for policy, r in result["policies"].items():
        if "error" in r:
            table.add_row(policy, "failed: see simulation.json", *[""] * 5)
            continue
        found = r["rounds_to_discovery"]
        table.add_row(
            policy,
            str(r["clicks"]),
            f"{r['expected_clicks']:.1f}",
            f"{r['best_expected_clicks']:.1f}",
            f"{r['regret']:.1f}",
            f"{r['explored_share']:.1%}",
            f"round {found}" if found else "never",
        )
    Console().print(table)
