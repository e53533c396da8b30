"""aime-rl: learned, causal perception for pixel Gymnasium environments."""

from aime_rl.envs import register_builtin_envs

__version__ = "0.1.0"

register_builtin_envs()
