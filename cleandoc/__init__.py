"""cleandoc: clean scanned document pages with a learned denoising autoencoder.

    from cleandoc import Cleaner
    cleaner = Cleaner.load()              # the shipped model; or Cleaner.load("my.safetensors")
    clean_page = cleaner.clean(page)      # a NumPy page: uint8, uint16 or float; gray, RGB or RGBA
"""

import os
import warnings

# Before torch allocates anything: ask it to back its large CPU tensors with transparent huge pages (the kernel
# honours this in its common "madvise" mode). Every page's activations are allocated afresh, and faulting
# them in 4 KiB at a time took a third of the model's time on a CPU. THP_MEM_ALLOC_ENABLE=0 turns it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
warnings.filterwarnings("ignore", message="thp madvise")  # a kernel without huge pages: plain pages, as before

__version__ = "0.1.0"
__all__ = ["Cleaner", "__version__"]


def __getattr__(name: str):
    """`Cleaner` is imported on first use, so that `cleandoc --help` does not wait for torch."""
    if name == "Cleaner":
        from .api import Cleaner

        return Cleaner
    raise AttributeError(f"module 'cleandoc' has no attribute {name!r}")
