"""o1code: reinforcement learning on code generation (the o1-Coder recipe).

Importing the package registers the Gymnasium ids ``O1Code-MBPP-v0``, ``O1Code-MBPP-Vanilla-v0``
and ``O1Code-MBPP-Direct-v0`` (``gym.make("o1code:O1Code-MBPP-v0")`` imports it for you).
"""

from o1code.registration import register_envs as _register_envs

__version__ = "0.1.0"

_register_envs()
