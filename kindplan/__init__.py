"""kindplan: compile a cluster snapshot into one node's kindnet networking, diff it, apply it."""

__version__ = "0.1.0"
