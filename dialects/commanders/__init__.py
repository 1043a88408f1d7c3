"""The commanders dialect: its pure parser and its own stores."""

# What the inspector may show of a refused request: keys that name an event, not a person.
SAFE_FIELDS = ("event_name", "event_id", "value", "currency", "category", "revenue", "tc_s", "id")
SECRET_FIELDS = ("token",)  # the inspector shows their first characters only
PERSONAL_FIELDS = ("user", "user_id", "cookie")  # never shown, nor opened when they hold an object
# Its modules that keep rows (each declares a STORE): purged and erased with every other store.
STORES = ("dialects.commanders.profiles", "dialects.commanders.catalog",)
