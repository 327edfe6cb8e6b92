"""srblocks: composable building blocks for efficient image super-resolution."""

from . import blocks  # noqa: F401  (eager registration of every block)
from .registry import list_blocks, register_block

__all__ = ["list_blocks", "register_block"]
__version__ = "0.1.0"
