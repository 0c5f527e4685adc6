"""Importers: shipped datasets and a user's own log -> the canonical schema as Parquet.

Every importer returns an :class:`ImportResult`; rows that cannot be used are never dropped
silently: they go to ``rejected.parquet`` with the reason, and the summary counts them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core import names as n
from core.schema import EVENTS_SCHEMA, ITEMS_SCHEMA, REJECTED_SCHEMA, REQUIRED_EVENT_COLUMNS

FUTURE_TOLERANCE = timedelta(days=1)
TAOBAO_TYPES = {
    "pv": n.EventType.VIEW,
    "cart": n.EventType.CART,
    "fav": n.EventType.FAV,
    "buy": n.EventType.PURCHASE,
}
# Online Retail product codes are five digits with an optional letter suffix; everything else
# (POST, DOT, M, C2, BANK CHARGES, PADS, AMAZONFEE, gift vouchers, ...) is a fee or adjustment.
RETAIL_PRODUCT_CODE = r"^\d{5}[A-Za-z]{0,2}$"


class ImportFailed(ValueError):
    """The input as a whole cannot be imported (missing file or columns)."""


@dataclass
class ImportResult:
    dataset: str
    events: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    rejected: pd.DataFrame
    source_rows: int
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        reasons = self.rejected["reason"].value_counts().to_dict() if len(self.rejected) else {}
        ts = self.events[n.EVENT_TIMESTAMP]
        return {
            "dataset": self.dataset,
            "source_rows": self.source_rows,
            "events": len(self.events),
            "rejected": len(self.rejected),
            "rejected_by_reason": {str(k): int(v) for k, v in reasons.items()},
            "users": int(self.events[n.USER_ID].nunique()),
            "items": int(self.events[n.ITEM_ID].nunique()),
            "items_with_title": int(self.items[n.TITLE].fillna("").ne("").sum()),
            "event_types": {
                str(k): int(v) for k, v in self.events[n.EVENT_TYPE].value_counts().items()
            },
            "first_event": ts.min().isoformat() if len(ts) else None,
            "last_event": ts.max().isoformat() if len(ts) else None,
            "notes": self.notes,
        }

    def write(self, out_dir: Path) -> dict[str, object]:
        """Write the four tables and ``summary.json`` atomically into ``out_dir``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        tables = {
            "events": pa.Table.from_pandas(self.events, schema=EVENTS_SCHEMA, preserve_index=False),
            "items": pa.Table.from_pandas(self.items, schema=ITEMS_SCHEMA, preserve_index=False),
            "users": pa.Table.from_pandas(self.users.astype("string"), preserve_index=False),
            "rejected": pa.Table.from_pandas(
                self.rejected, schema=REJECTED_SCHEMA, preserve_index=False
            ),
        }
        for name, table in tables.items():
            tmp = out_dir / f".{name}.parquet.tmp"
            pq.write_table(table, tmp)
            tmp.replace(out_dir / f"{name}.parquet")
        summary = self.summary()
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


def _reject(reason: pd.Series, mask: pd.Series | np.ndarray, why: str) -> None:
    """Set ``why`` on rows matching ``mask`` that have no earlier reason (first reason wins)."""
    reason[np.asarray(mask) & reason.isna().to_numpy()] = why


def canonicalize(
    frame: pd.DataFrame,
    raw: pd.DataFrame,
    reason: pd.Series | None = None,
    now: datetime | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate canonical columns row by row; return (events sorted by time, rejected rows).

    ``frame`` holds canonical columns (timestamps already parsed, NaT where unparsable);
    ``raw`` the source rows, same index, kept verbatim for rejected rows; ``reason`` any
    dataset-specific reasons found earlier.
    """
    now = now or datetime.now(UTC)
    reason = (
        reason.copy() if reason is not None else pd.Series(pd.NA, index=frame.index, dtype="object")
    )
    for col in (n.USER_ID, n.ITEM_ID):
        ids = frame[col].astype("string").str.strip()
        frame[col] = ids
        _reject(reason, ids.isna() | ids.eq(""), f"missing {col}")
    etype = frame[n.EVENT_TYPE].astype("string").str.strip().str.lower()
    frame[n.EVENT_TYPE] = etype
    _reject(reason, ~etype.isin(n.EVENT_TYPES).fillna(False), "unknown event_type")
    ts = frame[n.EVENT_TIMESTAMP]
    _reject(reason, ts.isna(), "bad or missing event_timestamp")
    _reject(
        reason,
        (ts > pd.Timestamp(now + FUTURE_TOLERANCE)).fillna(False),
        "event_timestamp in the future",
    )
    value = pd.to_numeric(frame[n.VALUE], errors="coerce") if n.VALUE in frame else None
    if value is None:
        frame[n.VALUE] = 1.0
    else:
        bad_value = value.isna() & frame[n.VALUE].notna()
        _reject(reason, bad_value, "value is not a number")
        frame[n.VALUE] = value.fillna(1.0).astype("float64")
    for col in (n.SESSION_ID, n.CATEGORY_ID):
        frame[col] = (
            frame[col].astype("string")
            if col in frame
            else pd.Series(pd.NA, index=frame.index, dtype="string")
        )

    bad = reason.notna().to_numpy()
    good = frame.loc[~bad, list(EVENTS_SCHEMA.names)]
    good = good.sort_values(n.EVENT_TIMESTAMP, kind="stable").reset_index(drop=True)
    return good, _rejected_frame(raw, reason)


def _rejected_frame(raw: pd.DataFrame, reason: pd.Series) -> pd.DataFrame:
    bad = reason.notna().to_numpy()
    rows = raw.loc[bad]
    payload = rows.to_json(orient="records", lines=True, date_format="iso").splitlines()
    return pd.DataFrame(
        {
            "source_row": rows.index.to_numpy(dtype="int64"),
            "reason": reason[bad].astype(str).to_numpy(),
            "raw": payload if len(rows) else [],
        }
    )


def _most_frequent(frame: pd.DataFrame, key: str, col: str) -> pd.Series:
    """For each ``key``, the most frequent non-empty ``col`` value (ties: first seen)."""
    sub = frame[[key, col]].dropna()
    sub = sub[sub[col].astype(str).str.strip().ne("")]
    counts = sub.groupby([key, col], sort=False).size().reset_index(name="k")
    best = counts.sort_values("k", ascending=False, kind="stable").drop_duplicates(key)
    return best.set_index(key)[col]


def derive_category(title: pd.Series) -> pd.Series:
    """A derived (not curated) category: the title's last word of 3+ letters, lower-cased.

    "WHITE METAL LANTERN" -> "lantern". Crude by design; items keep ``category_derived=True``.
    """
    last = title.fillna("").str.upper().str.findall(r"[A-Z]{3,}").str[-1]
    return last.str.lower()


def import_online_retail(path: Path) -> ImportResult:
    """UCI Online Retail: purchases with product titles (see ../shared/data/README.md)."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    reason = pd.Series(pd.NA, index=raw.index, dtype="object")
    qty = pd.to_numeric(raw["Quantity"], errors="coerce")
    code = raw["StockCode"].fillna("").str.strip().str.upper()
    _reject(reason, raw["CustomerID"].isna(), "missing user_id (no CustomerID)")
    _reject(reason, raw["InvoiceNo"].fillna("").str.startswith("C"), "cancellation")
    _reject(reason, ~(qty > 0).fillna(False), "non-positive quantity")
    _reject(reason, ~code.str.match(RETAIL_PRODUCT_CODE), "non-product stock code")
    _reject(reason, raw.duplicated(keep="first"), "exact duplicate row")
    local = pd.to_datetime(raw["InvoiceDate"], format="%Y-%m-%d %H:%M:%S", errors="coerce")
    ts = local.dt.tz_localize("Europe/London", ambiguous="NaT", nonexistent="NaT")
    frame = pd.DataFrame(
        {
            n.USER_ID: raw["CustomerID"].str.replace(r"\.0$", "", regex=True),
            n.ITEM_ID: code,
            n.EVENT_TYPE: n.EventType.PURCHASE.value,
            n.EVENT_TIMESTAMP: ts.dt.tz_convert("UTC"),
            n.VALUE: qty,
            n.SESSION_ID: raw["InvoiceNo"],
        }
    )
    products = raw.assign(item=code)[code.str.match(RETAIL_PRODUCT_CODE)]
    titles = _most_frequent(products, "item", "Description").str.strip()
    frame[n.CATEGORY_ID] = frame[n.ITEM_ID].map(derive_category(titles))
    events, rejected = canonicalize(frame, raw, reason)
    items = pd.DataFrame({n.ITEM_ID: sorted(events[n.ITEM_ID].unique())})
    items[n.TITLE] = items[n.ITEM_ID].map(titles)
    items[n.CATEGORY] = items[n.ITEM_ID].map(derive_category(titles))
    items[n.CATEGORY_DERIVED] = True
    items[n.BRAND] = None
    users = pd.DataFrame({n.USER_ID: sorted(events[n.USER_ID].unique())})
    customers = raw.assign(u=frame[n.USER_ID])
    users["country"] = users[n.USER_ID].map(_most_frequent(customers, "u", "Country"))
    return ImportResult(
        "online-retail",
        events,
        items,
        users,
        rejected,
        len(raw),
        notes=[
            "category is derived from the product title's last word (category_derived=True)",
            "InvoiceDate is UK local time, converted to UTC; value is the quantity bought",
        ],
    )


def import_taobao(path: Path) -> ImportResult:
    """Tianchi UserBehavior excerpt: pv/cart/fav/buy events with categories, no titles."""
    cols = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]
    raw = pd.read_csv(
        path, header=None, names=cols, dtype=str, keep_default_na=False, na_values=[""]
    )
    secs = pd.to_numeric(raw["timestamp"], errors="coerce")
    frame = pd.DataFrame(
        {
            n.USER_ID: raw["user_id"],
            n.ITEM_ID: raw["item_id"],
            n.EVENT_TYPE: raw["behavior_type"].map(TAOBAO_TYPES).fillna(raw["behavior_type"]),
            n.EVENT_TIMESTAMP: pd.to_datetime(secs, unit="s", utc=True),
            n.VALUE: 1.0,
            n.CATEGORY_ID: raw["category_id"],
        }
    )
    events, rejected = canonicalize(frame, raw)
    items = _items_from_events(events)
    users = pd.DataFrame({n.USER_ID: sorted(events[n.USER_ID].unique())})
    return ImportResult(
        "taobao",
        events,
        items,
        users,
        rejected,
        len(raw),
        notes=["no item titles: text cold start is unavailable on this dataset"],
    )


def _items_from_events(events: pd.DataFrame) -> pd.DataFrame:
    items = pd.DataFrame({n.ITEM_ID: sorted(events[n.ITEM_ID].unique())})
    items[n.TITLE] = None
    items[n.CATEGORY] = items[n.ITEM_ID].map(_most_frequent(events, n.ITEM_ID, n.CATEGORY_ID))
    items[n.CATEGORY_DERIVED] = False
    items[n.BRAND] = None
    return items


def import_movielens(folder: Path) -> ImportResult:
    """MovieLens 100K: ratings (value 1-5) with titles, genres and user demographics."""
    raw = pd.read_csv(
        folder / "u.data", sep="\t", header=None, dtype=str, names=["user", "item", "rating", "ts"]
    )
    genres = pd.read_csv(folder / "u.genre", sep="|", header=None, names=["genre", "i"])
    genre_names = genres["genre"].tolist()
    item_cols = ["item", "title", "release", "video", "url", *genre_names]
    movies = pd.read_csv(
        folder / "u.item", sep="|", header=None, names=item_cols, encoding="latin-1", dtype=str
    )
    flags = movies[genre_names].astype(int).to_numpy()
    # Primary genre: the first flagged one in u.genre's order (most movies have 1-3).
    primary = [genre_names[row.argmax()] if row.any() else "unknown" for row in flags]
    movies[n.CATEGORY] = primary
    frame = pd.DataFrame(
        {
            n.USER_ID: raw["user"],
            n.ITEM_ID: raw["item"],
            n.EVENT_TYPE: n.EventType.RATING.value,
            n.EVENT_TIMESTAMP: pd.to_datetime(
                pd.to_numeric(raw["ts"], errors="coerce"), unit="s", utc=True
            ),
            n.VALUE: raw["rating"],
        }
    )
    frame[n.CATEGORY_ID] = frame[n.ITEM_ID].map(movies.set_index("item")[n.CATEGORY])
    events, rejected = canonicalize(frame, raw)
    items = pd.DataFrame(
        {
            n.ITEM_ID: movies["item"],
            n.TITLE: movies["title"],
            n.CATEGORY: movies[n.CATEGORY],
            n.CATEGORY_DERIVED: False,
            n.BRAND: None,
        }
    )
    users = pd.read_csv(
        folder / "u.user",
        sep="|",
        header=None,
        dtype=str,
        names=[n.USER_ID, "age", "gender", "occupation", "zip"],
    )
    return ImportResult(
        "movielens",
        events,
        items,
        users,
        rejected,
        len(raw),
        notes=["category is the first genre flag; all genres are in u.item"],
    )


def import_event_log(path: Path, items_path: Path | None = None) -> ImportResult:
    """A user's own log (CSV or Parquet) in the canonical columns; see README "Your own data"."""
    if not path.exists():
        raise ImportFailed(f"no such file: {path}")
    raw = (
        pd.read_parquet(path)
        if path.suffix == ".parquet"
        else pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    )
    missing = [c for c in REQUIRED_EVENT_COLUMNS if c not in raw.columns]
    if missing:
        raise ImportFailed(
            f"{path} lacks required column(s) {missing}; "
            f"expected {list(EVENTS_SCHEMA.names)} (optional: value, "
            "session_id, category_id)"
        )
    frame = raw[[c for c in EVENTS_SCHEMA.names if c in raw.columns]].copy()
    frame[n.EVENT_TIMESTAMP] = parse_timestamps(raw[n.EVENT_TIMESTAMP])
    events, rejected = canonicalize(frame, raw.astype("string"))
    items = _items_from_events(events)
    if items_path is not None:
        given = (
            pd.read_parquet(items_path)
            if items_path.suffix == ".parquet"
            else pd.read_csv(items_path, dtype=str)
        )
        items = items[[n.ITEM_ID]].merge(given, on=n.ITEM_ID, how="left")
        for col in ITEMS_SCHEMA.names:
            if col not in items:
                items[col] = False if col == n.CATEGORY_DERIVED else None
        items = items[list(ITEMS_SCHEMA.names)]
    users = pd.DataFrame({n.USER_ID: sorted(events[n.USER_ID].unique())})
    return ImportResult(path.stem, events, items, users, rejected, len(raw))


def parse_timestamps(col: pd.Series) -> pd.Series:
    """ISO-8601 strings (naive means UTC) or unix seconds -> UTC timestamps, NaT if unparsable."""
    if pd.api.types.is_datetime64_any_dtype(col):
        return col.dt.tz_localize("UTC") if col.dt.tz is None else col.dt.tz_convert("UTC")
    numeric = pd.to_numeric(col, errors="coerce")
    as_secs = pd.to_datetime(numeric, unit="s", utc=True, errors="coerce")
    as_text = pd.to_datetime(col.where(numeric.isna()), utc=True, errors="coerce", format="ISO8601")
    return as_secs.fillna(as_text)


DATASETS: dict[str, tuple[str, Callable[[Path], ImportResult]]] = {
    "online-retail": ("online-retail/online_retail_all.csv.gz", import_online_retail),
    "taobao": ("taobao-userbehavior/UserBehavior.csv", import_taobao),
    "movielens": ("movielens-100k", import_movielens),
}


def import_dataset(name: str, shared_data_dir: Path) -> ImportResult:
    if name not in DATASETS:
        raise ImportFailed(
            f"unknown dataset {name!r}; choose one of {sorted(DATASETS)} "
            "or import your own log with --path"
        )
    rel, importer = DATASETS[name]
    path = shared_data_dir / rel
    if not path.exists():
        raise ImportFailed(f"{path} not found: the shipped datasets live in ../shared/data")
    return importer(path)
