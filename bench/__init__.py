"""End-to-end benchmarks of the scheduler extender: ``python -m bench all [--quick]``.

The service runs as its own process (real uvicorn, real PostgreSQL, the fake API server as a
third process) so its start-up time and resident memory are measurable, and the load is sent
over keep-alive HTTP in kube-scheduler's wire format. See docs/benchmarks.md.
"""
