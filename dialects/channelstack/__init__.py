"""The channelstack dialect: its pure parser and its own stores."""
