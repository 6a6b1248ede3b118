"""placeholder: the `keys` command group (being written)."""
