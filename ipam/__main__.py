"""``python -m ipam`` is the ``ipam`` command."""

from ipam.cli import main

main()
