"""Side-by-side benchmarks of ferjax against the PyTorch reference implementations."""
