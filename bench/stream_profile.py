"""Where a live event's time goes: the live job over N events under cProfile, by stage.

Run: ``python bench/stream_profile.py [events]`` with the bench project's settings (IG_DATA_DIR
with a canonical dataset and a Feast registry, IG_REDIS_PORT). Publishes the events to a fresh
stream first (not timed), then runs ``stream.live.live_flow`` in process under cProfile and
prints seconds per stage (cumulative time of the stage's entry points; the rest is the Bytewax
engine, routing and Python glue) and microseconds per event.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# stage -> (file suffix, function name) entry points; cumulative times of nested entries
# are not double-counted because the stages below do not call each other. The sinks' own
# work besides the two writes (XACK, dead-letter XADD, grouping rows, metrics) is their
# ``write_batch`` total minus the writes.
STAGES = {
    "read (XREADGROUP, decode)": [("stream/live.py", "_read_live")],
    "parse_event": [("stream/steps.py", "parse_event")],
    "user_features": [("stream/steps.py", "user_features")],
    "item_features": [("stream/steps.py", "item_features")],
    "offline Parquet": [("stream/io.py", "write_partition")],
    "Feast online write": [("feast/feature_store.py", "push"), ("stream/live.py", "write")],
}
IDLE_STOP_S = 0.5  # the run ends after this long without entries: not counted as work
SINK = ("stream/live.py", "write_batch")  # both live sinks' write_batch: the sinks' total


def stage_times(stats: pstats.Stats) -> dict[str, float]:
    out = dict.fromkeys(STAGES, 0.0)
    for (path, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        for stage, entries in STAGES.items():
            for suffix, name in entries:
                if func == name and path.endswith(suffix):
                    out[stage] += ct
    return out


def sink_total(stats: pstats.Stats) -> float:
    return sum(
        ct
        for (path, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items()  # type: ignore[attr-defined]
        if func == SINK[1] and path.endswith(SINK[0])
    )


def main(count: int = 20_000) -> None:
    from bytewax.testing import run_main

    from bench.stream_bench import _events, _fresh_stream, _wait_done
    from core.bus import publish
    from core.redis_server import redis_client
    from core.settings import get_settings
    from stream.io import few_full_collections
    from stream.live import live_flow

    events = _events(get_settings(), count)
    warm = _fresh_stream(get_settings())  # imports, Feast's typeguard instrumentation: not timed
    publish(redis_client(warm), warm.events_stream, events[:1000])
    run_main(live_flow(warm, idle_stop_s=0.2, history=False))
    settings = _fresh_stream(get_settings())
    publish(redis_client(settings), settings.events_stream, events)
    flow = live_flow(settings, idle_stop_s=IDLE_STOP_S, history=False)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    with few_full_collections():  # as `ig stream` runs (stream.job)
        profiler.enable()
        run_main(flow)
        profiler.disable()
    took = time.perf_counter() - started
    _wait_done(settings, count, timeout=5)
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    print(f"{count} events, {took:.2f} s wall under cProfile, {total:.2f} s profiled")
    times = stage_times(stats)
    for stage, seconds in times.items():
        print(f"{stage:40s} {seconds:7.2f} s {1e6 * seconds / count:8.1f} µs/event")
    other = sink_total(stats) - times["offline Parquet"] - times["Feast online write"]
    label = "XACK, dead letters, grouping, metrics"
    print(f"{label:40s} {other:7.2f} s {1e6 * other / count:8.1f} µs/event")
    rest = total - sum(times.values()) - other - IDLE_STOP_S  # not the final idle wait
    label = "rest (Bytewax engine, routing, glue)"
    print(f"{label:40s} {rest:7.2f} s {1e6 * rest / count:8.1f} µs/event")
    if "-v" in sys.argv:
        stats.sort_stats("tottime").print_stats(40)


if __name__ == "__main__":
    main(int(next((a for a in sys.argv[1:] if a.isdigit()), 20_000)))
