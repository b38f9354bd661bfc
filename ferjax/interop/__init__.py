"""Conversion between ferjax variables and PyTorch state_dicts (`ferjax.interop.torch`).

Importing ferjax never imports torch; only the tensor-facing functions touch it, lazily.
"""
