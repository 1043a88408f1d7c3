"""Meta's custom_data from an event's items: contents, content ids, and a name/category only when all agree."""
from __future__ import annotations

import pytest

from ingest.canonical import CanonicalEvent, utcnow
from config import Destination
from platforms import meta

DEST = Destination(site_id="shop", name="meta", platform="meta", mode="dry", enabled=True, events=None,
                   consent_category=None, settings={"pixel_id": "123"})


def purchase(items: list[dict], **properties) -> CanonicalEvent:
    now = utcnow()
    return CanonicalEvent(site_id="shop", dialect="test", event_name="purchase", standard_name="Purchase",
                          event_id="o1", occurred_at=now, received_at=now, identity={"em": "a" * 64},
                          user_agent="Mozilla/5.0", page_url="https://shop.example/thanks", value=30.0,
                          currency="EUR", items=items, properties=properties)


@pytest.mark.parametrize("items, extra", [
    ([{"id": "A", "quantity": 2, "price": 10.0, "name": "Shirt", "category": "Apparel"}],
     {"content_name": "Shirt", "content_category": "Apparel"}),
    ([{"id": "A", "name": "Shirt", "category": "Apparel"}, {"id": "B", "name": "Cap", "category": "Apparel"}],
     {"content_category": "Apparel"}),
    ([{"id": "A", "name": "Shirt"}, {"id": "B"}], {}),
])
def test_contents_carry_ids_and_a_name_or_category_only_when_every_item_agrees(items, extra):
    data = meta.build(purchase(items), DEST)["custom_data"]
    ids = [i["id"] for i in items]
    assert data == {"value": 30.0, "currency": "EUR", "content_type": "product", "content_ids": ids,
                    "contents": [{k: v for k, v in (("id", i["id"]), ("quantity", i.get("quantity")),
                                                     ("item_price", i.get("price"))) if v is not None} for i in items],
                    "num_items": sum(i.get("quantity", 1) for i in items), **extra}


def test_server_side_dollar_properties_never_reach_meta():
    data = meta.build(purchase([], coupon="SAVE20", **{"$current_url": "https://shop.example/?email=a@b.co"}), DEST)["custom_data"]
    assert data == {"value": 30.0, "currency": "EUR", "coupon": "SAVE20"}
