"""placeholder: the `generate` command group (being written)."""
