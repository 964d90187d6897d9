"""``python -m genievm_core`` runs the ``genievm`` command."""

from genievm_core.cli import run

run()
