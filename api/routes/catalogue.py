"""Catalogue: ``/v1/catalogue`` (available items, most popular first) and ``/v1/categories``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api.bundle import Bundle
from api.deps import BundleDep
from api.schemas import CatalogueItem, CataloguePage, CategoryCount

router = APIRouter(prefix="/v1", tags=["catalogue"])
MAX_PAGE = 200


@router.get("/catalogue", response_model=CataloguePage)
def catalogue(
    bundle: BundleDep,
    category: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"1..{MAX_PAGE}")] = 24,
) -> CataloguePage:
    """Available items of the served model's catalogue, most popular first (in ``category``
    when given)."""
    if category is None:
        order = bundle.popular
    elif category in bundle.by_category:
        order = bundle.by_category[category]
    else:
        raise HTTPException(404, f"unknown category {category!r}; GET /v1/categories lists them")
    return CataloguePage(
        category=category,
        total=len(order),
        offset=offset,
        items=[catalogue_item(bundle, ix) for ix in order[offset : offset + limit].tolist()],
    )


@router.get("/categories", response_model=list[CategoryCount])
def categories(bundle: BundleDep) -> list[CategoryCount]:
    """Categories with available items, the largest first."""
    counts = [CategoryCount(category=c, items=len(ix)) for c, ix in bundle.by_category.items() if c]
    return sorted(counts, key=lambda c: (-c.items, c.category))


def catalogue_item(bundle: Bundle, ix: int) -> CatalogueItem:
    return CatalogueItem(
        item_id=bundle.ids[ix],
        title=bundle.titles[ix],
        category=bundle.categories[ix],
        popularity=float(bundle.popularity[ix]),
        brand=bundle.brands[ix],
    )
