"""What the bridge keeps in its backends: Redis (:mod:`bridge.backends.redis`)."""
