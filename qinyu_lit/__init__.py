"""qinyu-lit: PyTorch Lightning training recipes for VITA-QinYu."""

__version__ = "0.1.0"
