"""The store registry: every table belongs to one store that says how it is purged and erased; dialects stay home."""
from __future__ import annotations

import gc
import hashlib
import io
import tokenize
from datetime import timedelta
from importlib import import_module
from pathlib import Path

import pytest
from peewee import CharField

from storage import retention
from storage import stores
from dialects.adtarget.funnel import Conversion, Lead, TrackingSession, Visit
from dialects.octeth.store import OctethSubscriber
from ingest.canonical import utcnow
from models import BaseModel, database
from storage.migrations import VERSION_TABLE
from storage.stores import Person, Store
from tests.conftest import BROWSER, RAW_PII
from tests.helpers import every_table_text

ROOT = Path(__file__).resolve().parent.parent
DIALECTS = sorted(p.name for p in (ROOT / "dialects").iterdir() if (p / "__init__.py").exists())
# The Telegram funnel has two more doors than its API: the join webhook and the tracker's pages.
MORE_BLUEPRINTS = {"adtarget": ("routes/telegram_webhook.py", "routes/tracker.py")}
EMAIL, OTHER_EMAIL = "erase.me@example.com", "keep.me@example.com"
RAW_PII.extend([EMAIL, OTHER_EMAIL])
USER_API = {"Authorization": "Bearer key_demo_123"}
ADTARGET = {"Authorization": "Bearer atk_live_demo"}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sources() -> list[Path]:
    """Every source file of the application: the tests, the benchmark and the virtualenv aside."""
    return sorted(path for path in ROOT.rglob("*.py")
                  if not {"tests", "bench"} & set(path.relative_to(ROOT).parts) and ".venv" not in path.parts)


def import_everything() -> None:
    """Import every module of the tree, so every model the code defines exists."""
    for path in sources():
        parts = path.relative_to(ROOT).with_suffix("").parts
        if "." not in parts[-1]:  # gunicorn.conf.py is read by gunicorn, not imported
            import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))


def defined_models() -> list[type[BaseModel]]:
    found, stack = [], list(BaseModel.__subclasses__())
    while stack:
        model = stack.pop()
        found.append(model)
        stack.extend(model.__subclasses__())
    return found


def unregistered() -> list[str]:
    """Models the code defines that no registered store, or more than one, lists."""
    import_everything()
    listed = [table for store in stores.registered() for table in store.tables]
    return sorted(model.__name__ for model in defined_models() if listed.count(model) != 1)


# --- the contract ----------------------------------------------------------------------------------------------


def test_every_model_of_the_code_belongs_to_exactly_one_registered_store():
    assert unregistered() == []


def test_a_model_no_store_registers_is_found():
    class Throwaway(BaseModel):
        name = CharField()

    try:
        assert unregistered() == ["Throwaway"]
    finally:
        del Throwaway
        gc.collect()  # gone from BaseModel's subclasses again
    assert unregistered() == []


def test_every_store_purges_and_erases_or_says_why_it_holds_no_personal_data():
    assert [store.name for store in stores.registered()
            if not store.impersonal and (store.purge is None or store.erase is None)] == []
    assert len({store.name for store in stores.registered()}) == len(stores.registered())
    with pytest.raises(ValueError, match="store 'secrets' keeps personal data: it needs a purge and an erase"):
        Store("secrets", (OctethSubscriber,), purge=lambda older_than, now: 0)


def test_the_ordered_table_list_holds_every_table_exactly_once_the_core_first():
    import_everything()
    names = [table._meta.table_name for table in stores.tables()]
    assert sorted(names) == sorted({model._meta.table_name for model in defined_models()})
    assert names[:3] == ["events", "sends", "destination_state"]


def test_the_database_has_every_listed_table_and_no_other(client):
    in_file = set(database.get_tables())
    assert in_file - {"sqlite_sequence", VERSION_TABLE} == {table._meta.table_name for table in stores.tables()}


# --- dialects stay in their own place ----------------------------------------------------------------------------


def mentions(path: Path, dialect: str) -> list[int]:
    """Lines whose code (not comments or docstrings) names the dialect: as a name, or as a module path in a string."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if token.type == tokenize.NAME and token.string == dialect or \
                token.type == tokenize.STRING and f"dialects.{dialect}" in token.string.replace("/", "."):
            found.append(token.start[0])
    return found


@pytest.mark.parametrize("dialect", DIALECTS)
def test_no_module_outside_a_dialects_own_place_names_it(dialect):
    own = {"app.py", f"routes/{dialect}.py", *MORE_BLUEPRINTS.get(dialect, ())}
    outside = [path for path in sources() if str(path.relative_to(ROOT)) not in own
               and path.relative_to(ROOT).parts[:2] != ("dialects", dialect)]
    assert {str(path.relative_to(ROOT)): lines for path in outside if (lines := mentions(path, dialect))} == {}


def test_a_module_naming_a_dialect_is_caught(tmp_path):
    path = tmp_path / "stray.py"
    path.write_text('"""Octeth is named here, in prose only."""\n# octeth\nfrom dialects.octeth import store\n'
                    'NAME = "dialects.octeth.store"\n')
    assert mentions(path, "octeth") == [3, 4]


# --- Octeth subscribers are purged and erased like the others -------------------------------------------------------


def octeth_event(client, email: str) -> None:
    response = client.post("/api/v1/event", json={"APIKey": "key_demo_123", "ListID": 94, "event": "pageView",
                                                  "email": email}, headers=BROWSER)
    assert response.status_code == 200, response.get_json()


def subscribers() -> list[str]:
    return [s.email_hash for s in OctethSubscriber.select().order_by(OctethSubscriber.id)]


def test_an_octeth_subscribers_email_hash_is_gone_after_that_persons_erasure(client):
    octeth_event(client, EMAIL)
    octeth_event(client, OTHER_EMAIL)
    assert client.post("/users?tc_s=shop", json={"id": "u-1", "email": EMAIL}, headers=USER_API).status_code == 200

    response = client.delete("/users/u-1?tc_s=shop", headers=USER_API)

    assert response.get_json() == {"status": "ok", "erased": {"profile": True, "events": 1, "sends": 1}}
    assert subscribers() == [sha(OTHER_EMAIL)]
    assert sha(EMAIL) not in every_table_text()


def test_an_octeth_subscribers_email_hash_is_gone_after_a_purge_past_retention(client):
    octeth_event(client, EMAIL)

    kept = retention.purge(90, utcnow() + timedelta(days=89))
    purged = retention.purge(90, utcnow() + timedelta(days=91))

    assert (kept["octeth_subscribers"], purged["octeth_subscribers"]) == (0, 1)
    assert subscribers() == []


# --- the funnel forgets a person too ----------------------------------------------------------------------------


def adtarget(client, path: str, body: dict) -> dict:
    response = client.post(f"/api/v1{path}", json=body, headers={**ADTARGET, "User-Agent": BROWSER["User-Agent"]})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_erasing_a_user_reaches_their_telegram_leads_through_an_email_their_conversion_carries(client):
    lead = {"channelId": "vip", "eventType": "Lead", "telegramUserId": 555}
    adtarget(client, "/events/conversion", {**lead, "pii": {"email": EMAIL}})
    adtarget(client, "/events/conversion", {**lead, "eventType": "Purchase"})  # waits for a value: no event yet
    adtarget(client, "/events/conversion", {**lead, "telegramUserId": 777, "pii": {"email": OTHER_EMAIL}})
    client.post("/users?tc_s=shop", json={"id": "u-1", "email": EMAIL}, headers=USER_API)

    response = client.delete("/users/u-1?tc_s=shop", headers=USER_API)

    assert response.get_json()["erased"] == {"profile": True, "events": 1, "sends": 1}
    assert [(c.telegram_user_id, c.event_type) for c in Conversion.select()] == [("777", "Lead")]
    assert [lead.telegram_user_id for lead in Lead.select()] == ["777"]


def test_erasing_a_person_forgets_the_visits_and_sessions_of_their_anonymous_id(client):
    adtarget(client, "/events/visit", {"href": "https://shop.example/vip", "tempId": "t-erased"})
    adtarget(client, "/events/visit", {"href": "https://shop.example/vip/more", "tempId": "t-erased"})
    adtarget(client, "/events/visit", {"href": "https://shop.example/vip", "tempId": "t-kept"})

    erased = retention.erase(Person("shop", "a test", anonymous_ids={"t-erased"}), utcnow())

    assert {table: n for table, n in erased.items() if n} == {"funnel_visits": 2, "funnel_sessions": 2}
    assert [(v.temp_id, s.temp_id) for v in Visit.select() for s in TrackingSession.select()] == [("t-kept", "t-kept")]


def test_every_module_that_declares_a_store_is_listed_in_the_registry():
    declaring = sorted(module.__name__ for module in stores.modules() if isinstance(getattr(module, "STORE", None), Store))
    assert declaring == sorted(stores.store_modules())
