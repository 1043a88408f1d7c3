"""The pixel dialect: its pure parser and its own stores."""
