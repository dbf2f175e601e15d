"""Training: data sources, the resumable loop, feature caching, run folders and plots."""
