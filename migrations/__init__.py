"""Alembic migrations; shipped inside the wheel as ``ipam.migrations``."""
