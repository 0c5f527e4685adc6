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
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import pandas as pd
import redis

from core import names as n

AVAILABLE = "available"  # the catalogue's availability column (models.artifact too)


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


def lay_over(table: pd.DataFrame, entries: Mapping[str, Entry]) -> pd.DataFrame:
    """``table`` (item_id, title, category, brand, available, any other columns) with
    ``entries`` laid over it: an entry's given fields replace its row's (None keeps them), an
    item the table lacks is appended in the entries' order (its other columns empty)."""
    out = table.astype({n.ITEM_ID: str}).set_index(n.ITEM_ID)
    for column in (n.TITLE, n.CATEGORY, n.BRAND, AVAILABLE):
        if column not in out:
            out[column] = True if column == AVAILABLE else None
    if not entries:
        return out.reset_index()
    given = pd.DataFrame([asdict(e) for e in entries.values()]).set_index(n.ITEM_ID)
    out = out.reindex(out.index.append(pd.Index([i for i in given.index if i not in out.index])))
    for column in (n.TITLE, n.CATEGORY, n.BRAND):
        values = given[column].dropna()
        out.loc[values.index, column] = values
    out.loc[given.index, AVAILABLE] = given[AVAILABLE].astype(bool)
    return out.reset_index(names=n.ITEM_ID)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
