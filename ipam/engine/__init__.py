"""Pure allocation rules: no I/O, no database, no Kubernetes client; stdlib ``ipaddress`` only."""
