"""The adtarget dialect: its pure parser and its own stores."""
