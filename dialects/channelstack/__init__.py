"""The channelstack dialect: its pure parser and its own stores."""

# What the inspector may show of a refused request: keys that name an event, not a person.
SAFE_FIELDS = ("event", "event_id", "order_id", "value", "currency", "occurred_at", "consent")
SECRET_FIELDS = ("api_key",)  # the inspector shows their first characters only
PERSONAL_FIELDS = ("distinct_id",)  # never shown, nor opened when they hold an object
