"""What the API's lifespan loads once: settings, the Feast store, the model bundle, metrics."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import redis
from threadpoolctl import threadpool_limits

from api.bundle import Bundle
from api.cache import ItemFeatureCache
from api.encoder import GuardedEncoder
from api.impressions import ImpressionLog
from api.metrics import ApiMetrics
from core import catalogue
from core import names as n
from core.catalogue import Entry
from core.feast_store import service_refs
from core.redis_server import redis_client
from core.settings import Settings
from models.artifact import ArtifactError, latest_version
from models.explore import ExploreConfig

if TYPE_CHECKING:
    from stream.forget import ForgetRecord

log = logging.getLogger(__name__)


class OnlineFeatures:
    """Feast's online store, read through the FeatureServices: a user's profile_v1 row and the
    candidates' item rows (ranker_v1's and policy_v1's item side). ``ig evaluate`` swaps in
    rows read as of a past time (api.replay) and runs the same pipeline over them."""

    def __init__(self, store: Any, profile_service: Any, item_refs: list[str]) -> None:
        self.store, self.profile_service, self.item_refs = store, profile_service, item_refs

    def user(self, user_id: str) -> dict[str, list[Any]]:
        return self.store.get_online_features(  # type: ignore[no-any-return]
            features=self.profile_service,
            entity_rows=[{n.USER_ID: user_id}],
            full_feature_names=True,
        ).to_dict()

    def items(self, item_ids: list[str]) -> dict[str, list[Any]]:
        online = self.store.get_online_features(
            features=self.item_refs,
            entity_rows=[{n.ITEM_ID: i} for i in item_ids],
            full_feature_names=True,
        ).to_dict()
        online.pop(n.ITEM_ID, None)
        return online  # type: ignore[no-any-return]


def wall_clock_us() -> int:
    """Now in µs since the epoch: the read time of windowed counts (``State.clock_us``)."""
    return time.time_ns() // 1000


class State:
    def __init__(self, settings: Settings) -> None:
        from core.feast_store import open_store

        self.settings = settings
        self.store = open_store(settings)
        self.profile_service = self.store.get_feature_service(n.PROFILE_V1)
        ranker_service = self.store.get_feature_service(n.RANKER_V1)
        policy_service = self.store.get_feature_service(n.POLICY_V1)
        # One online read per request for every item feature: the ranker's and the policy's.
        self.item_refs = service_refs(ranker_service, n.ITEM_ID) + service_refs(
            policy_service, n.ITEM_ID
        )
        self.features = OnlineFeatures(self.store, self.profile_service, self.item_refs)
        self.clock_us = wall_clock_us  # read time of windowed counts (a test may fix it)
        self.item_cache = ItemFeatureCache(settings.item_feature_ttl_s)
        missing = set(service_refs(ranker_service, n.USER_ID)) - set(
            service_refs(self.profile_service, n.USER_ID)
        )
        if missing:  # the context read (profile_v1) must carry ranker_v1's user side
            raise RuntimeError(f"{n.PROFILE_V1} lacks {n.RANKER_V1}'s user features {missing}")
        threadpool_limits(1)  # many small requests: one BLAS/OpenMP thread each, no spinning
        self.redis = redis_client(settings, timeout=0.5)
        self.explore_cfg = ExploreConfig()
        self.rng = np.random.default_rng()
        self.metrics = ApiMetrics()
        self.impressions = (
            ImpressionLog(
                redis_client(settings, timeout=2.0),
                settings.events_stream,
                self.metrics,
                settings.impression_buffer,
                settings.request_ttl_s,
                partitions=settings.event_partitions,
            )
            if settings.log_impressions
            else None
        )
        self._reload_lock = threading.RLock()
        self._last_degraded_log = 0.0
        self.bundle: Bundle | None = None
        self.encoder: GuardedEncoder | None = None
        self._title_cache: dict[str, np.ndarray] = {}
        self._serving_link: str | None = None
        try:
            self.load(None)
        except ArtifactError as exc:  # serve profile/health; recommend answers 503 until reload
            log.warning("no model loaded: %s (run `make train`, then POST /v1/admin/reload)", exc)
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        if settings.watch_s > 0:
            self._watcher = threading.Thread(target=self._watch, name="ig-watch", daemon=True)
            self._watcher.start()

    def artifact_path(self, version: str | None) -> Path:
        path = self.settings.artifacts_dir / (version or "latest")
        if not path.exists():
            raise ArtifactError(f"no artifact {path.name!r} under {self.settings.artifacts_dir}")
        return path

    def load(self, version: str | None) -> tuple[str, str | None]:
        """Load an artifact (default: latest), lay the live catalogue over it and swap it in;
        returns (new, previous) versions."""
        with self._reload_lock:
            bundle = Bundle.load(self.artifact_path(version))
            self._ensure_encoder(bundle)
            try:
                got, entries = catalogue.read(self.redis, self.settings.catalogue_key)
                if entries:  # else the bundle as built (no second build at start-up)
                    bundle = bundle.with_catalogue(entries, self._encoder_fn(), got)
                bundle.catalogue_version = got
                self.metrics.catalogue_version.set(got)
            except redis.RedisError as exc:  # served without it; the watcher lays it on later
                log.warning("live catalogue unavailable (%s): serving the artifact's", exc)
            bundle = self._overrides(bundle)
            previous = self.bundle.version if self.bundle else None
            self.bundle = bundle  # one assignment: requests see the old or the new, never a mix
            self._serving_link = latest_version(self.settings.artifacts_dir)
            self.metrics.model_info.info({"version": bundle.version, "path": str(bundle.path)})
            log.info("serving model %s (previous: %s)", bundle.version, previous)
            return bundle.version, previous

    def put_items(self, entries: list[Entry]) -> int:
        """PUT /v1/items: store ``entries`` in the live catalogue (Redis, so they survive a
        restart and reach the next training) and serve them from the next request; returns
        the catalogue's version."""
        got = catalogue.put(self.redis, self.settings.catalogue_key, entries)
        self.refresh_catalogue(got)
        return got

    def refresh_catalogue(self, known: int | None = None) -> bool:
        """Lay the live catalogue over the serving artifact again when its version is not the
        one served (``known``: the version just written or seen, saving a read when it is);
        True if it did."""
        with self._reload_lock:
            bundle = self.bundle
            if bundle is None or known == bundle.catalogue_version:
                return False
            got, entries = catalogue.read(self.redis, self.settings.catalogue_key)
            if got == bundle.catalogue_version:
                return False
            self.bundle = self._overrides(bundle.with_catalogue(entries, self._encoder_fn(), got))
            self.metrics.catalogue_version.set(got)
            return True

    def watch_once(self) -> None:
        """One look of the watcher: a newer live catalogue is laid on; a ``latest`` that now
        points elsewhere (a promoted or rolled-back artifact) is loaded."""
        # the online store's outage is reported by the routes that need it
        with contextlib.suppress(redis.RedisError):
            self.refresh_catalogue(catalogue.version(self.redis, self.settings.catalogue_key))
        link = latest_version(self.settings.artifacts_dir)
        if link is not None and link != self._serving_link:
            try:
                self.load(None)
            except ArtifactError as exc:  # keep serving; try again when latest moves again
                self._serving_link = link
                log.warning("latest -> %s not loaded, still serving the old one: %s", link, exc)

    def _watch(self) -> None:
        while not self._stop.wait(self.settings.watch_s):
            try:
                self.watch_once()
            except Exception:  # the watcher must outlive any one failure
                log.exception("model/catalogue watcher")

    def _encoder_fn(self) -> Callable[[list[str]], np.ndarray] | None:
        return self._encode if self.encoder is not None else None

    def _encode(self, texts: list[str]) -> np.ndarray:
        """Titles' embeddings, each title encoded once per process (a catalogue change lays
        every entry on again)."""
        assert self.encoder is not None
        cached = [self._title_cache.get(t) for t in texts]
        todo = sorted({t for t, c in zip(texts, cached, strict=True) if c is None})
        if todo:
            self._title_cache.update(zip(todo, self.encoder.encode_admin(todo), strict=True))
        return np.stack([self._title_cache[t] for t in texts])

    def _overrides(self, bundle: Bundle) -> Bundle:
        """The settings' ranker overrides applied to a bundle just built (IG_USE_RANKER,
        IG_RANKER_WEIGHT/SHARES)."""
        if not self.settings.use_ranker:  # IG_USE_RANKER: off, order by the GNN score
            return replace(bundle, ranker=None)
        if bundle.ranker is not None:
            return replace(  # IG_RANKER_WEIGHT: another blend than chosen
                bundle,
                ranker=bundle.ranker.with_weight(
                    self.settings.ranker_weight, self.settings.ranker_shares
                ),
            )
        return bundle

    def _ensure_encoder(self, bundle: Bundle) -> None:
        """The text encoder, created once the first artifact with text is loaded."""
        if bundle.text is not None and self.encoder is None:
            from models.text import TextEncoder

            s = self.settings
            self.encoder = GuardedEncoder(
                TextEncoder(),
                s.encode_max_chars,
                s.encoder_concurrency,
                s.encoder_wait_s,
                self.metrics,
                s.encoder_share,
            )

    def forget(self, user_id: str) -> ForgetRecord:
        """Forget a shopper: what this process holds of them at once (the serving model's
        row, impressions not yet written), then every store and artifact (stream.forget)."""
        from models.artifact import forget_user as forget_in_artifacts
        from stream.forget import forget_user

        buffered = self.impressions.forget(user_id) if self.impressions is not None else 0
        if self.bundle is not None:
            self.bundle.forget(user_id)
        record = forget_user(
            self.settings,
            redis_client(self.settings, timeout=30.0),
            self.store,
            user_id,
            also=[
                ("artifacts", lambda: forget_in_artifacts(self.settings.artifacts_dir, user_id)),
                ("buffered_impressions", lambda: buffered),
            ],
        )
        self.metrics.forgotten.inc()
        return record

    def close(self) -> None:
        """Shutdown: stop the watcher, write the impressions still buffered (a short wait at
        most)."""
        self._stop.set()
        if self.impressions is not None:
            self.impressions.close()

    def store_lost(self, exc: BaseException, route: str | None = None) -> None:
        """The online store is unreachable: count the degraded response of ``route`` (if it
        serves one) and log at most every 10 s (every request would flood the log)."""
        if route is not None:
            self.metrics.degraded.labels(route).inc()
        now = time.monotonic()
        if now - self._last_degraded_log > 10:
            self._last_degraded_log = now
            log.warning("online store unavailable, serving the fallback: %s", exc)
