"""farmwatch: laptop-farm detection. The wire contract lives in :mod:`farmwatch.contract`."""

__version__ = "0.1.0"
