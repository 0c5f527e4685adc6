"""Items: ``/v1/items?ids=`` (names and categories), ``PUT /v1/items[/{item_id}]`` (the live
catalogue), ``/v1/items/{item_id}/similar``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api.bundle import NONE
from api.deps import BundleDep, ItemPath, K, StateDep, WriteKey
from api.features import STORE_DOWN
from api.routes.catalogue import catalogue_item
from api.schemas import (
    CatalogueItem,
    ItemBatch,
    ItemIn,
    ItemPlaced,
    ItemsPut,
    SimilarItem,
    SimilarResponse,
)
from api.state import State
from core.catalogue import Entry

router = APIRouter(prefix="/v1/items", tags=["recommend"])
MAX_IDS = 100


@router.get("", response_model=list[CatalogueItem], tags=["catalogue"])
def lookup(
    bundle: BundleDep,
    ids: Annotated[
        str, Query(min_length=1, max_length=20_000, description=f"Comma-separated, 1..{MAX_IDS}.")
    ],
) -> list[CatalogueItem]:
    """Title, category and popularity of catalogue items, in the order asked (unknown ids
    are left out)."""
    wanted = [i.strip() for i in ids.split(",") if i.strip()]
    if not wanted or len(wanted) > MAX_IDS:
        raise HTTPException(422, f"ids must name 1..{MAX_IDS} items, comma-separated")
    found = [bundle.index[i] for i in wanted if i in bundle.index]
    return [catalogue_item(bundle, ix) for ix in found]


@router.put("", response_model=ItemsPut, tags=["catalogue"], dependencies=[WriteKey])
def put_items(state: StateDep, bundle: BundleDep, body: ItemBatch) -> ItemsPut:
    """Put many items into the live catalogue at once (``{"items": [{"item_id": ..., ...}]}``,
    up to 1,000): as ``PUT /v1/items/{item_id}`` each, in one write."""
    if len({i.item_id for i in body.items}) != len(body.items):
        raise HTTPException(422, "an item_id appears twice in the batch")
    entries = [Entry(i.item_id, i.title, i.category, i.brand, i.available) for i in body.items]
    return _put(state, entries)


@router.put("/{item_id}", response_model=ItemsPut, tags=["catalogue"], dependencies=[WriteKey])
def put_item(state: StateDep, bundle: BundleDep, item_id: ItemPath, body: ItemIn) -> ItemsPut:
    """Add an item to the catalogue or change one: title, category, brand, availability. A new
    titled item is embedded at once and placed in the item space by the model's text
    projection: search, ``similar`` and retrieval see it from the next request. Kept in Redis
    (``IG_CATALOGUE_KEY``): it survives restarts, and ``ig train --incremental`` trains on it."""
    return _put(state, [Entry(item_id, body.title, body.category, body.brand, body.available)])


def _put(state: State, entries: list[Entry]) -> ItemsPut:
    try:
        version = state.put_items(entries)
    except STORE_DOWN as exc:
        state.store_lost(exc)
        raise HTTPException(503, f"catalogue store unavailable, nothing written: {exc}") from exc
    state.metrics.catalogue_items.inc(len(entries))
    bundle = state.bundle
    assert bundle is not None
    return ItemsPut(
        catalogue_version=version,
        model_version=bundle.version,
        items=[
            ItemPlaced(
                item_id=e.item_id,
                placed_by=str(bundle.placed_by[bundle.index[e.item_id]]),
                available=bool(bundle.available[bundle.index[e.item_id]]),
            )
            for e in entries
        ],
    )


@router.get("/{item_id}/similar", response_model=SimilarResponse)
def similar(bundle: BundleDep, item_id: ItemPath, k: K = 20) -> SimilarResponse:
    """Neighbours in the item embedding space; a cold item is placed by its title."""
    ix = bundle.index.get(item_id)
    if ix is None:
        raise HTTPException(
            404, f"unknown item {item_id!r}; POST /v1/score with a title places a new item"
        )
    if bundle.placed_by[ix] == NONE:
        raise HTTPException(404, f"item {item_id!r} has no embedding (not in the graph, no title)")
    idx, sims = bundle.similar(ix, k)
    return SimilarResponse(
        item_id=item_id,
        placed_by=str(bundle.placed_by[ix]),
        items=[
            SimilarItem(
                item_id=bundle.ids[i],
                title=bundle.titles[i],
                category=bundle.categories[i],
                similarity=round(float(s), 6),
            )
            for i, s in zip(idx.tolist(), sims.tolist(), strict=True)
        ],
    )
