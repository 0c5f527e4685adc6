"""Compare feature stores: offline rows as Feast sees them, and online values against them.

Used by the live-stream tests and by the benchmark's handover check (half backfill + half
live must equal a backfill of the whole log)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.dataset as ds

from core import names as n
from core.schema import feature_row_schema
from core.settings import Settings


def visible_rows(folder: Path, view: str) -> pd.DataFrame:
    """Offline rows of ``view`` under ``folder`` as Feast sees them: the latest version per
    (entity, event time), without the version column, lists as Python lists."""
    key = n.VIEW_ENTITY_KEY[view]
    if not any((folder / view).glob("*.parquet")):  # a view no event fed (yet)
        return feature_row_schema(view).empty_table().to_pandas().drop(columns=n.CREATED_TIMESTAMP)
    frame = ds.dataset(folder / view, format="parquet").to_table().to_pandas()
    frame = frame.sort_values([key, n.EVENT_TIMESTAMP, n.CREATED_TIMESTAMP])
    frame = frame.drop_duplicates([key, n.EVENT_TIMESTAMP], keep="last")
    frame = frame.drop(columns=[n.CREATED_TIMESTAMP]).reset_index(drop=True)
    return frame.map(lambda v: v.tolist() if hasattr(v, "tolist") else v)


def offline_differences(folder: Path, reference: Path) -> list[str]:
    """Views whose visible rows under ``folder`` differ from those under ``reference``."""
    out = []
    for view in n.VIEW_FEATURES:
        try:
            pd.testing.assert_frame_equal(visible_rows(folder, view), visible_rows(reference, view))
        except AssertionError as exc:
            out.append(f"{view}: {str(exc).splitlines()[0]}")
    return out


def online_differences(settings: Settings, reference: Path) -> list[str]:
    """(view, feature) pairs whose online values (read through Feast, every entity) differ
    from each entity's latest visible row under ``reference``."""
    from core.feast_store import open_store

    store = open_store(settings)
    out = []
    for view in n.VIEW_FEATURES:
        key = n.VIEW_ENTITY_KEY[view]
        latest = visible_rows(reference, view).drop_duplicates(key, keep="last")
        if latest.empty:  # no entity to compare (a view no event fed)
            continue
        online: dict[str, list[Any]] = store.get_online_features(
            features=[f"{view}:{f}" for f in n.VIEW_FEATURES[view]],
            entity_rows=[{key: k} for k in latest[key]],
        ).to_dict()
        for feature in n.VIEW_FEATURES[view]:
            got = [v.tolist() if hasattr(v, "tolist") else v for v in online[feature]]
            wrong = sum(g != w for g, w in zip(got, latest[feature].tolist(), strict=True))
            if wrong:
                out.append(f"{view}.{feature}: {wrong} of {len(got)} entities differ")
    return out
