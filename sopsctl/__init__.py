"""sopsctl: a SOPS secrets policy manager (policy -> .sops.yaml, audit, native re-key)."""

__version__ = "0.1.0"
