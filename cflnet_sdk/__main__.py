"""``python -m cflnet_sdk`` is the ``cflnet`` command."""

from cflnet_sdk.cli import main

main()
