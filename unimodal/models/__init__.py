"""Models: the UniRepLKNet trunk, shared heads and the task model."""
