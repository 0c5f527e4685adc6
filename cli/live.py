"""The live path: ``ig stream`` (the live job) and ``ig replay`` (a log onto the bus)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.settings import get_settings


def register(sub: argparse._SubParsersAction) -> None:
    """``ig stream | replay``."""
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
    p.add_argument(
        "--freshness-out",
        help="on stop, write each event's freshness (XADD to written, seconds) as JSON here "
        "(benchmarks: the latest 100,000 events)",
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


def cmd_stream(args: argparse.Namespace) -> int:
    """Run the live feature job: Redis Stream -> dataflow -> Feast online + Parquet."""
    from stream.job import LiveJob, run_live_job
    from stream.live import HistoryError

    job = LiveJob(
        workers=args.workers,
        addresses=tuple(args.addresses.split(",")) if args.addresses else (),
        process_id=args.process_id,
        recovery_dir=Path(args.recovery_dir) if args.recovery_dir else None,
        epoch_s=args.epoch_s,
        idle_stop_s=args.idle_stop,
        metrics_port=args.metrics_port,
        report_s=args.report_s,
        freshness_out=Path(args.freshness_out) if args.freshness_out else None,
    )
    try:
        summary = run_live_job(get_settings(), job)
    except HistoryError as exc:
        print(f"live job refused: {exc}", file=sys.stderr)
        return 2
    print(f"stopped: {summary}", flush=True)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """XADD a canonical event log onto the event bus at a chosen speed factor."""
    import time

    import pyarrow.parquet as pq

    from core.bus import publish
    from core.names import EVENT_TIMESTAMP
    from core.redis_server import redis_client

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
        publish(client, s.events_stream, rows, s.event_partitions)
        sent += len(rows)
        if args.limit and sent >= args.limit:
            break
    print(f"replayed {sent} events from {path} onto {s.events_stream}")
    return 0
