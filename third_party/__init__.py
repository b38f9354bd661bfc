"""Code that stands for other projects' models (PyTorch references); not part of ferjax."""
