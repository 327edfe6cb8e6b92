"""Blocks: pure ``torch.nn.Module`` building blocks, one module per paper family.

Importing this package registers every block (see :mod:`srblocks.registry`). Blocks know nothing about specs.
"""

from .common import *  # noqa: F401,F403
from .safmn import *  # noqa: F401,F403
from .fmen import *  # noqa: F401,F403
from .hpinet import *  # noqa: F401,F403
from .hpun import *  # noqa: F401,F403
from .mga import *  # noqa: F401,F403
from .backbones import *  # noqa: F401,F403
