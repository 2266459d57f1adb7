"""Benchmarks of mixforge's stages, one harness (`benchmarks.harness`); run each as `python -m benchmarks.<name>`."""
