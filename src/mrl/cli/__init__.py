"""The ``mrl`` command line (typer)."""
