"""aime-rl: learned, causal perception for pixel Gymnasium environments.

``import aime_rl`` registers the built-in pixel envs (``aime_rl/Catch-v0``, ``aime_rl/CatchState-v0``) and the
context env ``aime_rl/Context-v0`` (``gym.make("aime_rl/Context-v0", env_id=..., model_dir=...)``).
"""

from aime_rl.envs import register_builtin_envs
from aime_rl.wrappers import register_context_env

__version__ = "0.1.0"

register_builtin_envs()
register_context_env()
