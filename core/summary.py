"""The demo's closing summary: rows per table, rejected rows, and one user read back online."""

from __future__ import annotations

import json
import time

import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from core import names as n
from core.settings import Settings
from core.windows import add_read_time_columns


def _rows(path) -> int:
    files = [path] if path.suffix == ".parquet" else sorted(path.glob("*.parquet"))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files if f.exists())


def most_active_user(settings: Settings) -> str:
    events = pq.read_table(
        settings.canonical_dir / settings.dataset / "events.parquet", columns=[n.USER_ID]
    )
    counts = events.group_by(n.USER_ID).aggregate([([], "count_all")])
    counts = counts.sort_by([("count_all", "descending")])
    return str(counts[n.USER_ID][0].as_py())


def demo_summary(settings: Settings, user_id: str | None = None) -> None:
    from core.feast_store import open_store

    console = Console()
    canonical = settings.canonical_dir / settings.dataset
    imported = json.loads((canonical / "summary.json").read_text())
    table = Table(title=f"InterestGraph demo: {settings.dataset}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name in ("events", "items", "users", "rejected"):
        table.add_row(f"canonical/{name}", f"{_rows(canonical / f'{name}.parquet'):,}")
    for view in n.VIEW_FEATURES:
        table.add_row(f"offline/{view}", f"{_rows(settings.offline_dir / view):,}")
    table.add_row("dead letters", f"{_rows(settings.data_dir / 'dead_letters'):,}")
    console.print(table)
    console.print(f"rejected at import: {imported['rejected_by_reason']}")

    store = open_store(settings)
    service = store.get_feature_service(n.PROFILE_V1)
    user_id = user_id or most_active_user(settings)
    started = time.perf_counter()
    online = store.get_online_features(
        features=service, entity_rows=[{n.USER_ID: user_id}], full_feature_names=True
    ).to_dict()
    took_ms = (time.perf_counter() - started) * 1000
    served = [k for k in online if k != n.USER_ID]
    # Windowed counts are true at read time: as of now (zero for an old log) and, for a
    # historical log, as of the user's last event.
    last_s = online.get(n.full_name(n.USER_INTEREST, n.LAST_EVENT_TS), [None])[0]
    read_at = {"now": time.time_ns() // 1000}
    if last_s:
        read_at["at last event"] = last_s * 1_000_000
    buckets = {k: v for k, v in online.items() if k.endswith(n.COUNT_BUCKETS)}
    for label, at_us in read_at.items():
        counts = add_read_time_columns(dict(buckets), at_us)
        for key in [k for k in counts if k not in buckets]:
            online[f"{key} ({label})"] = counts[key]
            served.append(f"{key} ({label})")
    views = ", ".join(p.name for p in service.feature_view_projections)
    console.print(f"features served by {n.PROFILE_V1}: {len(served)} (views: {views})")
    user_table = Table(title=f"user {user_id} online through Feast ({took_ms:.1f} ms)")
    user_table.add_column("feature")
    user_table.add_column("value")
    for key in served:
        value = online[key][0]
        if value not in (0, None, []):
            user_table.add_row(key, str(value))
    console.print(user_table)
