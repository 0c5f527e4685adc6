"""Forget a shopper everywhere the platform keeps them (GDPR art. 17): the store side of
``ig forget`` and ``DELETE /v1/users/{user_id}``.

Where a shopper lives, and what forgetting does there:

- **online store** (Feast on Redis): the user entity's hash, which holds every user view, is
  deleted (its key is the one Feast's Redis store computes), in this project and in every other
  Feast project kept in the same Redis (a key is the entity key then the project's name);
- **offline store**: every Parquet partition of a user view that holds them is rewritten
  without their rows (a temporary file renamed over the old one: readers see the old file or
  the new, never half of one; nobody else's rows change). Item views hold no shopper;
- **canonical log** (events, users, rejected rows) and the **dead-letter** Parquet files: the
  same; the backfill manifest's event count follows, so the live job still continues from the
  log it rebuilds its state from;
- **event stream and dead-letter stream** (and every other stream in that Redis whose entries
  are events: replays, old stream names): their entries are deleted (XDEL), and the slots of
  every answer they were shown (``ig:request:<id>``, what clicks are attributed from);
- **the live job's memory**: a ``forget`` control event on the stream (only when a live job
  has a consumer group there). The dataflow drops the shopper's state and deletes the control
  entry once acknowledged; a later event of that id starts a new shopper. A job that is not
  running picks it up when it starts.

The serving artifact's per-user data is the caller's step (``models.artifact.forget_user``),
passed in as ``also``. Every step is idempotent: a failed run can be repeated. What is kept is a
record (``data/forget/records.jsonl``): an id, when, how long, and counts per place; never the
shopper's id or data.

Matching: a ``user_id`` column by equality; a ``raw`` text column (a rejected or dead-lettered
row as it came in, whatever its column names) when one of its tokens is the id, so such a row
of someone else that happens to contain the same token is removed too (it was never a feature).
"""

from __future__ import annotations

import contextlib
import json
import re
import struct
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import redis

from core import names as n
from core.bus import (
    EVENT_FIELD,
    entry_id,
    group_info,
    iter_entries,
    partition_of,
    partition_streams,
    publish,
)
from core.settings import Settings
from stream.io import offline_lock, write_parquet_atomic

RAW = "raw"  # the column that keeps a rejected or dead-lettered row as it came in
RECORDS = Path("forget") / "records.jsonl"
USER_VIEWS = [v for v, key in n.VIEW_ENTITY_KEY.items() if key == n.USER_ID]
Step = tuple[str, Callable[[], int]]


@dataclass(frozen=True)
class ForgetRecord:
    """What a forget did: never the shopper's id or data."""

    forget_id: str
    at: str
    seconds: float
    removed: dict[str, int] = field(default_factory=dict)
    live_job: str = "none"  # none (no live job's group) | queued (a control event waits)


def tokens(text: str) -> set[str]:
    """The alphanumeric runs of ``text`` (``"14911.0"`` -> {"14911", "0"})."""
    return set(re.findall(r"[A-Za-z0-9]+", text))


def holds(table: pa.Table, user_id: str) -> pa.ChunkedArray | None:
    """A row mask of ``table``'s rows that are ``user_id``'s; None when it has no such column."""
    mask = None
    if n.USER_ID in table.column_names:
        mask = pc.fill_null(pc.equal(table[n.USER_ID].cast(pa.string()), user_id), False)
    if RAW in table.column_names:
        raw = table[RAW].cast(pa.string()).to_pylist()
        hit = pa.chunked_array([[v is not None and user_id in tokens(v) for v in raw]])
        mask = hit if mask is None else pc.or_(mask, hit)
    return mask


def forget_in_parquet(path: Path, user_id: str) -> int:
    """Rewrite one Parquet file without ``user_id``'s rows; returns how many were removed."""
    columns = [c for c in pq.read_schema(path).names if c in (n.USER_ID, RAW)]
    if not columns:
        return 0
    mask = holds(pq.read_table(path, columns=columns), user_id)
    removed = int(pc.sum(mask).as_py() or 0) if mask is not None else 0
    if removed:
        table = pq.read_table(path)
        keep = pc.invert(holds(table, user_id))  # type: ignore[arg-type]
        write_parquet_atomic(
            table.filter(keep).replace_schema_metadata(table.schema.metadata), path
        )
    return removed


def forget_in_files(paths: Iterable[Path], user_id: str) -> int:
    return sum(forget_in_parquet(p, user_id) for p in paths if p.exists())


def forget_offline(settings: Settings, user_id: str) -> int:
    """The offline store's user views (under the offline store's lock: the live job's
    compaction does not merge a file while its shopper's rows are removed)."""
    with offline_lock(settings.offline_dir):
        return forget_in_files(
            (
                p
                for view in USER_VIEWS
                for p in sorted((settings.offline_dir / view).glob("*.parquet"))
            ),
            user_id,
        )


def forget_log(settings: Settings, user_id: str) -> int:
    """The canonical log of every dataset (events, users, rejected rows) and the dead-letter
    Parquet files; keeps the backfill manifest's event count in step with the log."""
    manifest = settings.offline_dir / n.BACKFILL_MANIFEST
    info = json.loads(manifest.read_text()) if manifest.exists() else None
    before = _rows(Path(info["events_path"])) if info else None
    removed = forget_in_files(sorted(settings.canonical_dir.glob("*/*.parquet")), user_id)
    removed += forget_in_files(
        sorted((settings.data_dir / "dead_letters").glob("*.parquet")), user_id
    )
    if info and before == info["events"]:  # the live job replays exactly the backfilled log
        info["events"] = _rows(Path(info["events_path"]))
        tmp = manifest.with_name(f".{manifest.name}.tmp")
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(manifest)
    return removed


def _rows(path: Path) -> int | None:
    return pq.ParquetFile(path).metadata.num_rows if path.exists() else None


def forget_streams(client: redis.Redis, settings: Settings, user_id: str) -> tuple[int, int]:
    """Delete the shopper's entries from the event and dead-letter streams, and the slots of
    the answers they were shown; returns (entries, answers) removed."""
    requests: set[str] = set()
    entries = 0
    streams = {settings.events_stream.encode(), settings.dead_letter_stream.encode()}
    streams |= set(client.scan_iter(count=1000, _type="stream"))  # replays, tests, old names
    for stream in sorted(streams):
        ids = []
        for sid, event in _entries(client, stream):
            if str(event.get(n.USER_ID)) == user_id and event.get(n.EVENT_TYPE) != n.FORGET:
                ids.append(sid)
                if event.get(n.REQUEST_ID):
                    requests.add(str(event[n.REQUEST_ID]))
        for start in range(0, len(ids), 1000):
            entries += int(client.xdel(stream, *ids[start : start + 1000]))
    answers = int(client.delete(*(n.REQUEST_KEY.format(r) for r in requests))) if requests else 0
    return entries, answers


def _entries(client: redis.Redis, stream: bytes):
    """(entry id, the event) of every entry of ``stream`` that holds one as JSON: an event
    (field ``event``) or a dead letter's raw input (field ``raw``)."""
    for raw_id, fields in iter_entries(client, stream):
        payload = fields.get(EVENT_FIELD.encode(), fields.get(RAW.encode()))
        try:
            event = json.loads(payload) if payload is not None else None
        except (ValueError, UnicodeDecodeError):
            event = None
        if isinstance(event, dict):
            yield entry_id(raw_id), event


def online_key(store: Any, user_id: str) -> bytes:
    """The Redis key under which Feast's Redis store keeps a user's every view."""
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    key = EntityKey(join_keys=[n.USER_ID], entity_values=[Value(string_val=user_id)])
    return _redis_key(store.project, key, store.config.entity_key_serialization_version)


def online_keys(client: redis.Redis, store: Any, user_id: str) -> list[bytes]:
    """The user's key in this Feast project and in every other one in the same Redis: Feast's
    key is the serialised entity key followed by the project's name, so they share its prefix."""
    own = online_key(store, user_id)
    prefix = own[: -len(store.project.encode())]
    pattern = re.sub(rb"([*?\[\]\\])", rb"\\\1", prefix) + b"*"
    found = {k for k in client.scan_iter(match=pattern, count=1000) if k.startswith(prefix)}
    return sorted(found | {own})


def tell_live_job(client: redis.Redis, settings: Settings, user_id: str) -> str:
    """Queue a ``forget`` control event for the live job, if one reads the stream (on the
    shopper's partition of the bus, behind their other events)."""
    stream = partition_streams(settings.events_stream, settings.event_partitions)[
        partition_of(user_id, settings.event_partitions)
    ]
    if group_info(client, stream, settings.consumer_group) is None:
        return "none"
    now = datetime.now(UTC).isoformat()
    publish(
        client,
        settings.events_stream,
        [{n.USER_ID: user_id, n.EVENT_TYPE: n.FORGET, n.EVENT_TIMESTAMP: now}],
        settings.event_partitions,
    )
    return "queued"


def forget_user(
    settings: Settings,
    client: redis.Redis,
    store: Any,
    user_id: str,
    also: Iterable[Step] = (),
) -> ForgetRecord:
    """Forget ``user_id`` in every store (see the module's docstring), then run ``also``
    (name, step returning a count); write and return the record."""
    started = time.monotonic()
    removed: dict[str, int] = {}
    removed["online_keys"] = int(client.delete(*online_keys(client, store, user_id)))
    removed["stream_entries"], removed["answers"] = forget_streams(client, settings, user_id)
    removed["offline_rows"] = forget_offline(settings, user_id)
    removed["log_rows"] = forget_log(settings, user_id)
    for name, step in also:
        removed[name] = step()
    live = tell_live_job(client, settings, user_id)
    with contextlib.suppress(redis.ResponseError):  # persistence off, or a save running
        client.bgsave()  # the next snapshot on disk is written without them
    record = ForgetRecord(
        forget_id=uuid.uuid4().hex,
        at=datetime.now(UTC).isoformat(),
        seconds=round(time.monotonic() - started, 3),
        removed=removed,
        live_job=live,
    )
    path = settings.data_dir / RECORDS
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(asdict(record)) + "\n")
    return record


# -- checking: where a shopper's id is still found ------------------------------------------


def _token_pattern(user_id: str) -> str:
    """RE2 pattern: ``user_id`` as a whole token (not inside a longer run of letters/digits)."""
    return rf"(^|[^A-Za-z0-9]){re.escape(user_id)}([^A-Za-z0-9]|$)"


def _bytes_hit(blob: bytes, user_id: str) -> bool:
    return re.search(_token_pattern(user_id).encode(), blob) is not None


def redis_leftovers(client: redis.Redis, user_id: str) -> dict[str, int]:
    """Hits per Redis key: a key whose name holds ``user_id`` (1), or its values / stream
    entries where it is a token."""
    hits: dict[str, int] = {}
    # Feast's entity keys hold a value as its 4-byte length then its bytes, then the project
    framed = struct.pack("<I", len(user_id.encode())) + user_id.encode()
    for key in client.scan_iter(count=1000):
        if framed in key or _bytes_hit(key, user_id):
            found = 1
        else:
            found = sum(_bytes_hit(b, user_id) for b in _values(client, key))
        if found:
            hits[key.decode(errors="backslashreplace")] = found
    return hits


def _values(client: redis.Redis, key: bytes) -> list[bytes]:
    """Every value (hash fields too, stream entries' fields) under ``key``."""
    kind = client.type(key)
    if kind == b"hash":
        return [b for pair in client.hgetall(key).items() for b in pair]
    if kind == b"stream":
        return [v for _, fields in iter_entries(client, key) for v in fields.values()]
    if kind == b"string":
        return [client.get(key) or b""]
    if kind == b"list":
        return client.lrange(key, 0, -1)
    if kind == b"set":
        return list(client.smembers(key))
    if kind == b"zset":
        return client.zrange(key, 0, -1)
    return []


def parquet_leftovers(path: Path, user_id: str) -> int:
    """Cells of a Parquet file where ``user_id`` is a value or a whole token of a text."""
    table = pq.read_table(path)
    hits = 0
    for column in table.columns:
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            column = pc.list_flatten(column)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            found = pc.match_substring_regex(column, _token_pattern(user_id))
            hits += int(pc.sum(pc.fill_null(found, False)).as_py() or 0)
    return hits


def file_leftovers(roots: Iterable[Path], user_id: str) -> dict[str, int]:
    """Hits per file under ``roots``: every Parquet file, and every JSON / JSON-lines / text
    file. Numeric arrays and model weights (.npy, .npz, .pt) hold no ids; SQLite files (Feast's
    registry, Bytewax's recovery snapshots) are not read."""
    out: dict[str, int] = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")) if Path(root).exists() else []:
            if not path.is_file() or path.is_symlink():
                continue
            if path.suffix == ".parquet":
                hits = parquet_leftovers(path, user_id)
            elif path.suffix in (".json", ".jsonl", ".txt", ".csv"):
                hits = len(re.findall(_token_pattern(user_id), path.read_text(errors="replace")))
            else:
                continue
            if hits:
                out[str(path)] = hits
    return out


def leftovers(
    settings: Settings, client: redis.Redis, user_id: str, artifacts_dir: Path | None = None
) -> dict[str, int]:
    """Where ``user_id`` is still found, as hits per place: each Redis key (``redis:<key>``, every
    key and stream) and each file of the data folder and the artifacts. Empty after a forget
    (the forget records hold no ids)."""
    found = file_leftovers([settings.data_dir, artifacts_dir or settings.artifacts_dir], user_id)
    for key, hits in redis_leftovers(client, user_id).items():
        found[f"redis:{key}"] = hits
    return found
