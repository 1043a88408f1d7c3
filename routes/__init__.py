"""Flask blueprints: one per dialect, plus health and admin."""
