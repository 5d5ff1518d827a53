"""The Postgres + pgvector backend of the funnel (``pip install 'mrl[postgres]'``); a local server for
development and tests: :mod:`mrl.index.postgres.server` (``mrl pg start``)."""
