"""Weightsmith's merge engine: lazy checkpoint IO, the method registry, recipes and the streaming executor.

Pure Python + torch. Nothing in this package imports Qt (a test enforces it).
"""

__version__ = "0.1.0"
