"""Fixed-IP manager for Kubernetes, compatible with galaxy-ipam.

Layers (checked by import-linter): ``cli`` -> ``app`` -> ``api``/``k8s`` -> ``services`` ->
``storage`` -> ``engine``. The engine is pure; only ``storage`` speaks SQL and only ``k8s``
speaks to the API server.
"""

__version__ = "0.1.0"
