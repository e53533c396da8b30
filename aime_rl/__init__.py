"""aime-rl: learned, causal perception for pixel Gymnasium environments."""

__version__ = "0.1.0"
