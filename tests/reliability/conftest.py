"""Reliability tests reuse the service fixtures of the API and controller suites."""

from tests.api.conftest import seed_pod, service  # noqa: F401
from tests.k8s.conftest import controlled, service_factory  # noqa: F401
