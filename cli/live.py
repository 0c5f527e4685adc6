"""The live path: ``ig stream`` (the live job) and ``ig replay`` (a log onto the bus)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from core.settings import get_settings


def register(sub: argparse._SubParsersAction) -> None:
    """``ig stream | replay``."""
    p = sub.add_parser("stream", help="run the live feature job on the Redis event stream")
    p.add_argument(
        "-w",
        "--workers",
        type=int,
        default=1,
        help="workers: without -a, this many worker processes on this machine (one core "
        "each); with -a, Bytewax worker threads per process (they share one core)",
    )
    p.add_argument("-a", "--addresses", help="host:port of every process, comma-separated")
    p.add_argument("-i", "--process-id", type=int, default=0)
    p.add_argument("-r", "--recovery-dir", help="Bytewax recovery folder (created if empty)")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on 127.0.0.1:PORT/metrics (local worker k of -w: PORT+k)",
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
        "(benchmarks: the latest 100,000 events; local worker k of -w: FILE.k)",
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

    local = args.workers > 1 and not args.addresses
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
        if local:
            return _local_processes(args)
        summary = run_live_job(get_settings(), job)
    except HistoryError as exc:
        print(f"live job refused: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: a normal stop (what was not acknowledged is re-read)
        from stream.metrics import stream_metrics

        print(f"stopped (interrupted): {stream_metrics().summary()}", flush=True)
        return 0
    print(f"stopped: {summary}", flush=True)
    return 0


def _die_with_parent() -> None:
    """In a child, before it runs: SIGTERM when this process ends, even by kill -9 (Linux), so
    a restarted ``ig stream -w N`` never meets the old workers still running."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # ignored in a background shell job: the
    # forwarded Ctrl-C must stop the worker as it stops `ig stream` (Python's handler)


def _local_processes(args: argparse.Namespace) -> int:
    """``ig stream -w N`` without ``-a``: N processes of one worker each on this machine, one
    Bytewax cluster (``-a`` on free local ports, ``-i`` 0..N-1). Python runs one thread at a
    time per process, so worker threads would share one core; processes use N. The recovery
    folder is prepared here, once, before they start. Ctrl-C / SIGTERM stop them all (and
    they stop if this process is killed); if one fails, the others are stopped and its exit
    status returned."""
    import signal
    import subprocess

    from cli.procs import ig_command
    from core.redis_server import free_port
    from stream.job import prepare_recovery

    count = args.workers
    if args.recovery_dir:  # (a HistoryError here: the caller's refusal)
        prepare_recovery(get_settings(), Path(args.recovery_dir), count)
    addresses = ",".join(f"127.0.0.1:{free_port()}" for _ in range(count))
    common = ["--report-s", str(args.report_s), "--epoch-s", str(args.epoch_s)]
    for flag, value in (("-r", args.recovery_dir), ("--idle-stop", args.idle_stop)):
        if value is not None:
            common += [flag, str(value)]
    children = []
    for k in range(count):
        own = ["-a", addresses, "-i", str(k)]
        if args.metrics_port:
            own += ["--metrics-port", str(args.metrics_port + k)]
        if args.freshness_out:
            own += ["--freshness-out", f"{args.freshness_out}.{k}"]
        children.append(
            subprocess.Popen(
                [*ig_command("stream"), *common, *own],  # this directory: the same paths
                process_group=0,  # a terminal's Ctrl-C reaches them once: forwarded from here
                preexec_fn=_die_with_parent,
            )
        )

    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    status = 0
    while any(c.poll() is None for c in children):
        failed = [c.returncode for c in children if c.returncode not in (None, 0)]
        if failed and not stopping:  # one worker failed: the cluster cannot go on
            status = failed[0]
            print(f"a worker process exited with {status}: stopping the others", file=sys.stderr)
            forward(signal.SIGTERM, None)
        time.sleep(0.2)
    if stopping:
        return status
    return next((c.returncode for c in children if c.returncode), 0)


def cmd_replay(args: argparse.Namespace) -> int:
    """XADD a canonical event log onto the event bus at a chosen speed factor."""
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
