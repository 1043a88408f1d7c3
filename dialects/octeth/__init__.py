"""The octeth dialect: its pure parser and its own stores."""
