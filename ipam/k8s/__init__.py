"""Kubernetes side: the only package that imports the ``kubernetes`` client."""
