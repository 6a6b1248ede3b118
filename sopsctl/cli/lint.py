"""placeholder: the `lint` command group (being written)."""
