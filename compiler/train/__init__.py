"""Training: the resumable loop, feature caching, run folders, progress and distribution."""
