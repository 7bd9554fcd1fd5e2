"""policylab: learn robot policies from demonstrations."""

__version__ = "0.1.0"
