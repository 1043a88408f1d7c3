"""The octeth dialect: its pure parser and its own stores."""

# What the inspector may show of a refused request: keys that name an event, not a person.
SAFE_FIELDS = ("event", "ListID", "list_id", "id")
SECRET_FIELDS = ("APIKey", "SessionID")  # the inspector shows their first characters only
# Its modules that keep rows (each declares a STORE): purged and erased with every other store.
STORES = ("dialects.octeth.store",)
