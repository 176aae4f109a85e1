"""retint: bring colour back to black-and-white photos."""

__version__ = "0.1.0"
__all__ = ["Colorizer", "__version__"]


def __getattr__(name: str):
    # Lazy, so `retint --version` and `import retint.io` do not pay for importing torch.
    if name == "Colorizer":
        from .inference import Colorizer

        return Colorizer
    raise AttributeError(f"module 'retint' has no attribute {name!r}")
