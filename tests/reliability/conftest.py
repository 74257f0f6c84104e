"""Reliability tests reuse the controller fixtures (service with fast controllers)."""

from tests.k8s.conftest import controlled, service_factory  # noqa: F401
