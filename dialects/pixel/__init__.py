"""The pixel dialect: its pure parser and its own stores."""

# What the inspector may show of a refused request: keys that name an event, not a person.
SAFE_FIELDS = ("event", "event_name", "event_id", "event_token", "category", "value", "currency", "revenue",
               "amount", "consent")
SECRET_FIELDS = ("access_token",)  # the inspector shows their first characters only
PERSONAL_FIELDS = ("params",)  # never shown, nor opened when they hold an object
# Its modules that keep rows (each declares a STORE): purged and erased with every other store.
STORES = ("dialects.pixel.profiles",)
