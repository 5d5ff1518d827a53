"""``python -m mrl ...``: the command line (also what ``torchrun -m mrl`` runs)."""

from mrl.cli.main import main

main()
