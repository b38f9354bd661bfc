"""PyTorch reference models that ferjax's parity tests and exports target (see README.md)."""
