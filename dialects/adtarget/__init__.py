"""The adtarget dialect: its pure parser and its own stores."""

# What the inspector may show of a refused request: keys that name an event, not a person.
SAFE_FIELDS = ("eventType", "eventTime", "occurred_at", "value", "currency", "id", "type", "channel", "source",
               "conversionId", "conversionName", "conversionValue")
PERSONAL_FIELDS = ("pii", "user")  # never shown, nor opened when they hold an object
# Its modules that keep rows (each declares a STORE): purged and erased with every other store.
STORES = ("dialects.adtarget.funnel",)
# Pages it adds to the console (each module: PAGE, TITLE, listing(config, user), submit(...)).
CONSOLE_PAGES = ("dialects.adtarget.console",)
