"""CNI IPAM plugin ``ipam-cni``: asks the ipam service for a pod's fixed addresses.

The container runtime executes it on every node at every pod start, so this package is
standard-library only, imports nothing here, and keeps its modules runnable on the node's
own ``python3`` (3.8 or later) when shipped as a zipapp by ``ipam.cni.install``.
"""
