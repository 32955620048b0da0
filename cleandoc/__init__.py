"""cleandoc: clean scanned document pages with a learned denoising autoencoder.

    from cleandoc import Cleaner
    cleaner = Cleaner.load()              # the shipped model; or Cleaner.load("my.safetensors")
    clean_page = cleaner.clean(page)      # a NumPy page: uint8, uint16 or float; gray, RGB or RGBA
"""

__version__ = "0.1.0"
__all__ = ["Cleaner", "__version__"]


def __getattr__(name: str):
    """`Cleaner` is imported on first use, so that `cleandoc --help` does not wait for torch."""
    if name == "Cleaner":
        from .api import Cleaner

        return Cleaner
    raise AttributeError(f"module 'cleandoc' has no attribute {name!r}")
