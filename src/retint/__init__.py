"""retint: bring colour back to black-and-white photos."""

__version__ = "0.1.0"
