"""``ig``: the platform's command line (import, backfill, Feast, Redis, summary).

Start-up stays lean: heavy imports (Feast, Bytewax, pandas) happen inside the command that
needs them, so ``ig env`` or ``ig redis up`` answer at once.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from core.settings import get_settings


def cmd_env(args: argparse.Namespace) -> int:
    """Print ``export`` lines for the variables feature_store.yaml reads."""
    for key, value in get_settings().feast_env().items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def cmd_redis(args: argparse.Namespace) -> int:
    from core.redis_server import RedisServer, RedisStartError, RedisStopError

    s = get_settings()
    server = RedisServer(s.redis_port, s.redis_dir, s.redis_password)
    where = f"redis-server on 127.0.0.1:{s.redis_port} (data in {s.redis_dir})"
    if args.action == "up":
        was_up = server.ping()
        try:
            server.start(daemonize=True)
        except RedisStartError as exc:
            print(f"{where}: could not start: {exc}", file=sys.stderr)
            return 2
        print(f"{where}: {'already running' if was_up else 'started'}")
        serving_dir = server.data_dir()
        if serving_dir and Path(serving_dir) != s.redis_dir.resolve():
            print(
                f"warning: the server on port {s.redis_port} keeps its data in {serving_dir}, "
                "not in this project: set IG_REDIS_PORT to use your own",
                file=sys.stderr,
            )
    elif args.action == "down":
        try:
            stopped = server.stop(save=not args.force)
        except RedisStopError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{where}: {'stopped' if stopped else 'was not running'}")
    else:
        up = server.ping()
        print(f"{where}: {'running' if up else 'not running'}")
        return 0 if up else 1
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from core.importers import ImportFailed, import_dataset, import_event_log

    s = get_settings()
    try:
        if args.path:
            result = import_event_log(Path(args.path), Path(args.items) if args.items else None)
        else:
            result = import_dataset(args.dataset or s.dataset, s.shared_data_dir)
    except ImportFailed as exc:
        print(f"import failed: {exc}", file=sys.stderr)
        return 2
    out = s.canonical_dir / result.dataset
    summary = result.write(out)
    _print_import_summary(summary, out)
    if args.path and result.dataset != s.dataset:
        print(f"\nTo build features from it: IG_DATASET={result.dataset} make backfill")
    return 0


def _print_import_summary(summary: dict[str, object], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"import {summary['dataset']} -> {out}", show_header=False)
    for key in (
        "source_rows",
        "events",
        "rejected",
        "users",
        "items",
        "items_with_title",
        "first_event",
        "last_event",
    ):
        table.add_row(key, str(summary[key]))
    for reason, count in dict(summary["rejected_by_reason"]).items():  # type: ignore[call-overload]
        table.add_row(f"  rejected: {reason}", str(count))
    for note in list(summary["notes"]):  # type: ignore[call-overload]
        table.add_row("note", str(note))
    Console().print(table)
    print(f"rejected rows with their reasons: {out / 'rejected.parquet'}")


def cmd_backfill(args: argparse.Namespace) -> int:
    from stream.backfill import run_backfill

    s = get_settings()
    dataset = args.dataset or s.dataset
    events = s.canonical_dir / dataset / "events.parquet"
    try:
        report = run_backfill(
            events, s.offline_dir, s.data_dir / "dead_letters", batch_rows=s.backfill_batch_rows
        )
    except FileNotFoundError as exc:
        print(f"backfill failed: {exc}", file=sys.stderr)
        return 2
    print(
        f"backfill {dataset}: {report.events} events in {report.seconds:.1f} s "
        f"({report.events_per_s:,.0f} events/s); rows {report.rows}; "
        f"dead letters {report.dead_letters}"
    )
    (s.data_dir / "backfill.json").write_text(
        json.dumps(
            {
                "dataset": dataset,
                "events": report.events,
                "seconds": report.seconds,
                "rows": report.rows,
                "dead_letters": report.dead_letters,
            },
            indent=2,
        )
    )
    return 0


def cmd_feast(args: argparse.Namespace) -> int:
    """Run the real ``feast`` CLI in feature_repo/ with the settings' environment."""
    s = get_settings()
    s.export_feast_env()
    feast = Path(sys.executable).with_name("feast")
    os.chdir(s.feature_repo)
    os.execv(str(feast), [str(feast), *args.feast_args])


def cmd_materialize(args: argparse.Namespace) -> int:
    from core.feast_store import materialize, open_store

    for view, span in materialize(open_store()).items():
        print(f"materialized {view}: {span}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from core.summary import demo_summary

    demo_summary(get_settings(), user_id=args.user)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from models.lightgcn import LightGCNConfig
    from models.train import TrainConfig, train

    s = get_settings()
    cfg = TrainConfig(
        dataset=args.dataset or s.dataset,
        split=args.split,
        seed=args.seed,
        ranker=not args.no_ranker,
        refit=not args.no_refit,
    )
    gcn = LightGCNConfig(
        embedding_dim=args.dim,
        num_layers=args.layers,
        lr=args.lr,
        batch_size=args.batch_size,
        neg_popularity_power=args.neg_power,
        neg_candidates=args.neg_candidates,
        max_epochs=args.epochs,
        seed=args.seed,
    )
    if not (s.canonical_dir / cfg.dataset / "events.parquet").exists():
        print(
            f"no canonical data for {cfg.dataset}: run `ig import --dataset {cfg.dataset}`",
            file=sys.stderr,
        )
        return 2
    train(s, cfg, gcn)
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    """Run the live feature job: Redis Stream -> dataflow -> Feast online + Parquet."""
    import subprocess
    import threading
    from datetime import timedelta

    from bytewax.recovery import RecoveryConfig
    from bytewax.testing import cluster_main

    from core.names import BACKFILL_MANIFEST
    from stream.io import few_full_collections
    from stream.live import HistoryError, backfill_history, live_flow
    from stream.metrics import report_every, stream_metrics

    s = get_settings()
    addresses = args.addresses.split(",") if args.addresses else []
    partitions = args.workers * max(len(addresses), 1)
    try:
        history = backfill_history(s)
    except HistoryError as exc:
        print(f"live job refused: {exc}", file=sys.stderr)
        return 2
    recovery = None
    if args.recovery_dir:
        recovery_dir = Path(args.recovery_dir)
        snapshots = list(recovery_dir.glob("part-*.sqlite3"))
        manifest = s.offline_dir / BACKFILL_MANIFEST
        if snapshots and manifest.exists():
            newest = max(p.stat().st_mtime for p in snapshots)
            if newest < manifest.stat().st_mtime:
                print(
                    f"live job refused: the recovery folder {recovery_dir} predates the last "
                    f"backfill ({manifest}); its state belongs to the old offline store. Delete "
                    "the folder: the job then rebuilds its state from the new backfill's log.",
                    file=sys.stderr,
                )
                return 2
        if not snapshots:
            recovery_dir.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [sys.executable, "-m", "bytewax.recovery", str(recovery_dir), str(partitions)],
                check=True,
            )
        recovery = RecoveryConfig(recovery_dir)
    flow = live_flow(
        s,
        idle_stop_s=args.idle_stop,
        partitions=partitions,
        consumer=f"features-{args.process_id}",
        history=history or False,
    )
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr="127.0.0.1", registry=stream_metrics().registry)
    stop = threading.Event()
    report_every(args.report_s, stop)
    if history is not None:
        print(
            f"continuing from the backfill of {history.path} ({history.events:,} events): "
            "without a recovery snapshot, state is first rebuilt from that log and from the "
            "entries this group already processed",
            flush=True,
        )
    print(
        f"live features: {s.events_stream} -> Feast {s.feast_project} "
        f"({args.workers} worker(s), process {args.process_id} of {max(len(addresses), 1)}, "
        f"recovery {'on' if recovery else 'off'})",
        flush=True,
    )
    with few_full_collections():  # a long run keeps much state: see the helper's docstring
        cluster_main(
            flow,
            addresses,
            args.process_id,
            worker_count_per_proc=args.workers,
            recovery_config=recovery,
            epoch_interval=timedelta(seconds=args.epoch_s),
        )
    stop.set()
    print(f"stopped: {stream_metrics().summary()}", flush=True)
    return 0


def cmd_api_demo(args: argparse.Namespace) -> int:
    from api.demo import run

    return run(get_settings())


def cmd_replay(args: argparse.Namespace) -> int:
    """XADD a canonical event log onto the event bus at a chosen speed factor."""
    import time

    import pyarrow.parquet as pq

    from core.names import EVENT_TIMESTAMP
    from core.redis_server import redis_client
    from stream.live import publish

    s = get_settings()
    path = (
        Path(args.path)
        if args.path
        else s.canonical_dir / (args.dataset or s.dataset) / "events.parquet"
    )
    client = redis_client(s)
    sent, started, first_ts = 0, time.monotonic(), None
    for batch in pq.ParquetFile(path).iter_batches(batch_size=500):
        rows = batch.to_pylist()
        if args.limit:
            rows = rows[: args.limit - sent]
        if args.speed and rows:
            ts = rows[-1][EVENT_TIMESTAMP].timestamp()
            first_ts = first_ts if first_ts is not None else rows[0][EVENT_TIMESTAMP].timestamp()
            delay = (ts - first_ts) / args.speed - (time.monotonic() - started)
            if delay > 0:
                time.sleep(delay)
        publish(client, s.events_stream, rows)
        sent += len(rows)
        if args.limit and sent >= args.limit:
            break
    print(f"replayed {sent} events from {path} onto {s.events_stream}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ig", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "env", help="print export lines for feature_store.yaml's variables"
    ).set_defaults(func=cmd_env)
    p = sub.add_parser("redis", help="start/stop/check the project's redis-server")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--force", action="store_true", help="down: stop without saving the data")
    p.set_defaults(func=cmd_redis)
    p = sub.add_parser("import", help="import a shipped dataset or your own log")
    p.add_argument("--dataset", help="online-retail | taobao | movielens (default: IG_DATASET)")
    p.add_argument("--path", help="your own events file (CSV or Parquet, canonical columns)")
    p.add_argument("--items", help="optional items file for --path (item_id, title, ...)")
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("backfill", help="compute offline features with the Bytewax dataflow")
    p.add_argument("--dataset", help="canonical dataset folder to replay (default: IG_DATASET)")
    p.set_defaults(func=cmd_backfill)
    p = sub.add_parser("feast", help="run the feast CLI in feature_repo/ (e.g. ig feast apply)")
    p.add_argument("feast_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_feast)
    sub.add_parser("materialize", help="load the latest offline features into Redis").set_defaults(
        func=cmd_materialize
    )
    p = sub.add_parser("summary", help="print what the demo built and read one user back")
    p.add_argument("--user", help="user_id to read back (default: the most active user)")
    p.set_defaults(func=cmd_summary)
    p = sub.add_parser("stream", help="run the live feature job on the Redis event stream")
    p.add_argument("-w", "--workers", type=int, default=1, help="workers per process")
    p.add_argument("-a", "--addresses", help="host:port of every process, comma-separated")
    p.add_argument("-i", "--process-id", type=int, default=0)
    p.add_argument("-r", "--recovery-dir", help="Bytewax recovery folder (created if empty)")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on 127.0.0.1:PORT/metrics",
    )
    p.add_argument(
        "--report-s", type=float, default=10.0, help="print a metrics line every this many seconds"
    )
    p.add_argument(
        "--epoch-s",
        type=float,
        default=2.0,
        help="seconds per epoch: how often state is snapshotted for recovery",
    )
    p.add_argument(
        "--idle-stop",
        type=float,
        default=None,
        help="stop after this many seconds without events (default: run forever)",
    )
    p.set_defaults(func=cmd_stream)
    p = sub.add_parser("replay", help="XADD an event log onto the event stream")
    p.add_argument("--dataset", help="canonical dataset to replay (default: IG_DATASET)")
    p.add_argument("--path", help="an events.parquet in the canonical schema")
    p.add_argument(
        "--speed",
        type=float,
        default=None,
        help="event-time seconds per wall second (default: as fast as possible)",
    )
    p.add_argument("--limit", type=int, default=None, help="replay at most this many events")
    p.set_defaults(func=cmd_replay)
    p = sub.add_parser("train", help="train LightGCN, baselines, text cold start, ranker")
    p.add_argument("--dataset", help="canonical dataset (default: IG_DATASET)")
    p.add_argument("--split", choices=["time", "leave_last_out"], default="time")
    p.add_argument("--epochs", type=int, default=40, help="max epochs (early stopping)")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--lr", type=float, default=1.5e-2)
    p.add_argument(
        "--no-refit",
        action="store_true",
        help="serve the early-stopped model instead of retraining it on train+val",
    )
    p.add_argument(
        "--neg-power",
        type=float,
        default=0.0,
        help="negatives drawn by popularity**power (0: uniform)",
    )
    p.add_argument(
        "--neg-candidates",
        type=int,
        default=8,
        help="hard negatives: the highest-scored of this many sampled items (1: plain BPR)",
    )
    p.add_argument("--batch-size", type=int, default=16384)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ranker", action="store_true", help="skip the Feast ranker step")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("api-demo", help="start the API and print a few real calls")
    p.set_defaults(func=cmd_api_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
