"""Tests of the CNI plugin ``ipam-cni`` (ipam/cni)."""
