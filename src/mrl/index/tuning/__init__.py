"""Tuning through the ``Tunable`` protocol only: recall against exact search, the cascade tune, adaptive gates."""
