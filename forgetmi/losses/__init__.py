"""Loss terms, one module per family."""
