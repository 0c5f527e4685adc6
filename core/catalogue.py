"""The live catalogue: items a shop puts (``PUT /v1/items/{item_id}``) after training, kept in
Redis so that they survive restarts of the API and reach the next training.

One Redis hash (``IG_CATALOGUE_KEY``, default ``ig:catalogue``): field = item id, value = the
entry as JSON (title, category, brand, available, updated_at). A counter beside it
(``<key>:version``) goes up with every write, in the same transaction, so a process serving
the catalogue knows by one GET whether it has to read the hash again (api.state's watcher).
Training reads the hash too (models.incremental): a put item joins the catalogue of the next
artifact with its title, category and availability.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import redis


@dataclass(frozen=True)
class Entry:
    """One item as the shop describes it; None: not given (keeps the artifact's value when
    the item is already in the catalogue)."""

    item_id: str
    title: str | None = None
    category: str | None = None
    brand: str | None = None
    available: bool = True
    updated_at: str = ""


def version_key(key: str) -> str:
    return f"{key}:version"


def put(client: redis.Redis, key: str, entries: Iterable[Entry]) -> int:
    """Write ``entries`` and bump the version, in one transaction (retried if another writer
    changed the catalogue meanwhile); a field an entry leaves None keeps the item's stored
    value. Returns the new version."""
    entries = list(entries)
    if not entries:
        return version(client, key)
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    ids = [e.item_id for e in entries]

    def write(pipe: redis.client.Pipeline) -> None:
        stored = dict(zip(ids, pipe.hmget(key, ids), strict=True))
        mapping = {}
        for e in entries:
            old = json.loads(stored[e.item_id]) if stored[e.item_id] else {}
            new = {k: v for k, v in asdict(e).items() if v is not None}
            mapping[e.item_id] = json.dumps({**old, **new, "updated_at": e.updated_at or now})
        pipe.multi()
        pipe.hset(key, mapping=mapping)
        pipe.incr(version_key(key))

    return int(client.transaction(write, key)[-1])


def read(client: redis.Redis, key: str) -> tuple[int, dict[str, Entry]]:
    """(version, item id -> entry) read together (one transaction)."""
    pipe = client.pipeline(transaction=True)
    pipe.get(version_key(key))
    pipe.hgetall(key)
    raw_version, raw = pipe.execute()
    entries = {}
    for field, value in raw.items():
        data = json.loads(value)
        entries[_text(field)] = Entry(**{k: data.get(k) for k in Entry.__dataclass_fields__})
    return int(raw_version or 0), entries


def version(client: redis.Redis, key: str) -> int:
    """The catalogue's write counter (0: never written)."""
    return int(client.get(version_key(key)) or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
