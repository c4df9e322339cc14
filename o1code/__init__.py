"""o1code: reinforcement learning on code generation (the o1-Coder recipe).

Importing the package registers the Gymnasium ids ``O1Code-MBPP-v0``, ``O1Code-MBPP-Vanilla-v0``
and ``O1Code-MBPP-Direct-v0`` (``gym.make("o1code:O1Code-MBPP-v0")`` imports it for you).
Every error o1code raises on purpose is an `O1CodeError`.
"""

from o1code.errors import O1CodeError
from o1code.registration import register_envs as _register_envs

__version__ = "0.1.0"
__all__ = ["O1CodeError", "__version__"]

_register_envs()
