"""Small shared utilities: atomic file writes, safetensors checkpoints, input validation."""
