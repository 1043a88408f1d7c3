"""The commanders dialect: its pure parser and its own stores."""
