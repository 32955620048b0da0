"""cleandoc: clean scanned document pages with a learned denoising autoencoder."""

__version__ = "0.1.0"
