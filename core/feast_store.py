"""Feast access for app code: a FeatureStore over ``feature_repo/`` and first-run materialize.

``import feast`` takes seconds, so it is imported here lazily, never at module import.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc
import pyarrow.dataset as ds

from core import names as n
from core.settings import Settings, get_settings

if TYPE_CHECKING:
    from feast import FeatureStore


def service_refs(service: Any, join_key: str) -> list[str]:
    """``view:feature`` references of a FeatureService's views keyed by ``join_key``."""
    return [
        f"{p.name}:{f.name}"
        for p in service.feature_view_projections
        if n.VIEW_ENTITY_KEY.get(p.name) == join_key
        for f in p.features
    ]


def open_store(settings: Settings | None = None) -> FeatureStore:
    """A FeatureStore on the project's feature repo, configured from settings."""
    settings = settings or get_settings()
    settings.export_feast_env()
    from feast import FeatureStore

    return FeatureStore(repo_path=str(settings.feature_repo))


def feast_apply(settings: Settings) -> None:
    """Run the real ``feast apply`` in the feature repo, with the settings' environment."""
    import os
    import subprocess
    import sys

    subprocess.run(
        [sys.executable, "-m", "feast.cli.cli", "apply"],
        check=True,
        env={**os.environ, **settings.feast_env()},
        cwd=settings.feature_repo,
        capture_output=True,
    )


def earliest_offline_timestamp(settings: Settings, view: str) -> datetime | None:
    folder = settings.offline_dir / view
    if not folder.exists() or not any(folder.glob("*.parquet")):
        return None
    column = ds.dataset(folder, format="parquet").to_table(columns=[n.EVENT_TIMESTAMP])
    earliest = pc.min(column[n.EVENT_TIMESTAMP]).as_py()
    return earliest.astimezone(UTC) if earliest is not None else None


def materialize(
    store: FeatureStore, settings: Settings | None = None, end: datetime | None = None
) -> dict[str, str]:
    """``feast materialize-incremental``, except that a view never materialized starts at its
    earliest offline row (Feast would start at now - ttl and miss historical data)."""
    settings = settings or get_settings()
    end = end or datetime.now(UTC)
    done: dict[str, str] = {}
    incremental = []
    for fv in store.list_feature_views():
        if fv.most_recent_end_time is not None:
            incremental.append(fv.name)
            continue
        start = earliest_offline_timestamp(settings, fv.name)
        if start is None:
            done[fv.name] = "no offline rows yet"
            continue
        store.materialize(
            start_date=start - timedelta(seconds=1), end_date=end, feature_views=[fv.name]
        )
        done[fv.name] = f"{start.isoformat()} .. {end.isoformat()}"
    if incremental:
        store.materialize_incremental(end_date=end, feature_views=incremental)
        done.update({name: f"incremental .. {end.isoformat()}" for name in incremental})
    return done
