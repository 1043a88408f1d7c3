"""The product catalogue (Commanders' Product API) and the enrichment of event items from it."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from peewee import DoubleField, TextField

from models import BaseModel, JSONField, UTCDateTimeField, writing
from storage.stores import Store

ENRICHED_TEXT = ("name", "category", "brand")
COLUMNS = {"name": "name", "price": "price", "currency": "currency", "category": "category",
           "brand": "brand", "url": "url", "attributes": "attributes"}


class Product(BaseModel):
    """One catalogue item of a site; `product_id` is the shop's own id (the SKU items name)."""

    site = TextField()
    product_id = TextField()
    name = TextField(null=True)
    price = DoubleField(null=True)
    currency = TextField(null=True)
    category = TextField(null=True)
    brand = TextField(null=True)
    url = TextField(null=True)
    attributes = JSONField(default=dict)
    updated_at = UTCDateTimeField()

    class Meta:
        table_name = "products"
        indexes = ((("site", "product_id"), True),)


def upsert(site_id: str, products: Iterable[dict[str, Any]], now: datetime) -> int:
    """Insert or update each product in one transaction; only the fields it gives change, the last of an id wins."""
    count = 0
    with writing():
        for fields in products:
            given = {getattr(Product, column): fields[key] for key, column in COLUMNS.items() if key in fields}
            (Product.insert(site=site_id, product_id=fields["id"], updated_at=now, **{f.name: v for f, v in given.items()})
             .on_conflict(conflict_target=[Product.site, Product.product_id], update={**given, Product.updated_at: now})
             .execute())
            count += 1
    return count


def enrich(items: list[dict[str, Any]], site_id: str, currency: str | None) -> list[dict[str, Any]]:
    """Items with the catalogue's name, category, brand and price filled in where the event lacks them.

    A catalogue price in another currency than the event's is not used: it would be a wrong number.
    """
    ids = {item["id"] for item in items if "id" in item}
    if not ids:
        return items
    known = {p.product_id: p for p in Product.select().where((Product.site == site_id) & Product.product_id.in_(list(ids)))}
    enriched = []
    for item in items:
        product = known.get(item.get("id"))
        if product is None:
            enriched.append(item)
            continue
        filled = dict(item)
        for key in ENRICHED_TEXT:
            if key not in filled and getattr(product, key) is not None:
                filled[key] = getattr(product, key)
        if "price" not in filled and product.price is not None and product.currency in (None, currency):
            filled["price"] = product.price
        enriched.append(filled)
    return enriched


STORE = Store("products", (Product,), impersonal="a shop's catalogue: items and their prices, no one's data")
