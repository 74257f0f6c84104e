"""Runtime configuration, read once from ``IPAM_*`` environment variables.

Nested groups use ``__`` (``IPAM_RECONCILER__INTERVAL_SECONDS=30``). Tests build ``Settings``
directly instead of mutating the environment.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ReconcilerSettings(BaseModel):
    """How often and how patiently leaked addresses are freed."""

    interval_seconds: float = Field(30.0, gt=0)
    #: A pod missing from the API server for this long is considered gone for good.
    grace_seconds: float = Field(60.0, ge=0)
    #: An address reserved at bind time whose pod is still unbound after this long is freed.
    unbound_grace_seconds: float = Field(120.0, ge=0)


class WatchSettings(BaseModel):
    """Backoff schedule for list+watch loops, in seconds; the last step repeats."""

    backoff_seconds: list[float] = Field(default_factory=lambda: [0.5, 1, 2, 5, 10, 30])
    timeout_seconds: int = Field(300, gt=0)


class LeaderSettings(BaseModel):
    """Which replica runs the controllers: the holder of a PostgreSQL advisory lock."""

    enabled: bool = True
    #: How often a follower tries to take the lock and the leader checks it still holds it.
    renew_seconds: float = Field(5.0, gt=0)


class PoolConfigMapSettings(BaseModel):
    """galaxy's pool ConfigMap, watched so ``kubectl apply`` of it takes effect."""

    enabled: bool = True
    namespace: str = "kube-system"
    name: str = "floatingip-config"
    key: str = "floatingips"


class Settings(BaseSettings):
    """Everything the service reads at start."""

    model_config = SettingsConfigDict(
        env_prefix="IPAM_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    #: ``postgresql+asyncpg://user:pass@host/db``; empty = start an embedded PostgreSQL. In a
    #: cluster: a LOGIN member of ``ipam_app``, which owns nothing (docs/security.md).
    database_url: SecretStr | None = None
    #: What ``ipam migrate`` connects as: the role that owns the tables. Unset: database_url.
    migrate_database_url: SecretStr | None = None
    #: Whether ``ipam serve`` migrates the schema itself. Unset: only the embedded PostgreSQL
    #: (the quickstart); with a URL the schema is ``ipam migrate``'s job, and serve waits up to
    #: ``schema_wait_seconds`` for it to reach this version's head.
    migrate_on_start: bool | None = None
    schema_wait_seconds: float = Field(600.0, ge=0)
    #: How long ``serve`` waits for a database it cannot reach at all (within the schema
    #: wait). 0: one error line at once, the right answer to a wrong URL. The Helm chart sets
    #: it to the schema wait: on a first CloudNativePG install the cluster starts after us.
    database_wait_seconds: float = Field(0.0, ge=0)
    #: Connections kept open: about the scheduler's bind concurrency. Connections beyond it
    #: (overflow) are closed when returned; with 10 kept, binds at concurrency 32 opened and
    #: closed one per few binds and lost their prepared statements each time.
    database_pool_size: int = Field(20, ge=1)
    database_max_overflow: int = Field(20, ge=0)
    #: How long a request waits for a pooled connection before it is a 503 (extender: Error).
    database_pool_timeout_seconds: float = Field(10.0, gt=0)
    #: Listen address. Unset: all interfaces with a token file, else 127.0.0.1 only (an open
    #: admin API is served to this machine alone unless asked for); see ``listen_host``.
    host: str | None = None
    #: 9040 is the port in galaxy's scheduler policy (urlPrefix http://<svc>:9040/v1).
    port: int = Field(9040, ge=1, le=65535)
    #: Pool config applied at start: galaxy's floatingips JSON list or the whole ConfigMap YAML.
    pools_file: Path | None = None
    #: Where the embedded PostgreSQL keeps its data.
    data_dir: Path = Path("~/.local/share/ipam").expanduser()
    #: Largest body of the extender's filter and prioritize with full node objects
    #: (nodeCacheCapable: false; 5,000 realistic nodes are ~19 MiB), and the share of all
    #: large bodies in flight together. Sized with the manifests' 256 MiB memory limit:
    #: docs/reliability.md, "Memory per request".
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    #: The same verbs with node names only (nodeCacheCapable: true, the shipped mode): 5,000
    #: names and the pod are ~150 KiB; a larger one is a 413 before it is decoded (names
    #: unknown to the cluster cost ~50x their bytes to answer, one failure reason each).
    max_names_body_bytes: int = Field(1024 * 1024, ge=1024)
    #: Every other route (REST, bind; /v1/pools/import has the pool config's 4 MiB).
    max_api_body_bytes: int = Field(1024 * 1024, ge=1024)
    #: All request bodies being received or worked on at once (ipam.api.body_limit).
    body_bytes_in_flight: int = Field(48 * 1024 * 1024, ge=1024)
    #: A connection the service waits on is closed past these (ipam.api.connections): from
    #: its opening, or the end of its last response, until its request headers are in ...
    http_header_timeout_seconds: float = Field(10.0, gt=0)
    #: ... and from the headers until the body is in (also: a response it does not read).
    http_body_timeout_seconds: float = Field(30.0, gt=0)
    #: Open connections per listener; at the cap a new one evicts the one that waited on its
    #: client longest, and is refused (503) only when every connection is being served.
    http_max_connections: int = Field(1000, ge=1)
    log_level: str = "INFO"
    #: One JSON object per log line (with the request id); false for plain text.
    log_json: bool = True
    #: On SIGTERM: stop accepting, let in-flight binds finish for up to this long.
    shutdown_grace_seconds: int = Field(20, ge=0)
    #: REST API tokens: a file of ``name:role:secret`` lines, or a directory where a Secret
    #: holding such files is mounted. Unset: authentication is off (quickstart only; logged).
    auth_tokens_path: Path | None = None
    #: How often the token source is checked for rotation, in seconds.
    auth_reload_seconds: float = Field(5.0, ge=0)
    #: Serve /v1/filter, /v1/prioritize, /v1/bind on their own listener instead of the main port.
    #: In a cluster with TLS and a client CA, so that only kube-scheduler can bind pods.
    extender_host: str | None = None
    extender_port: int | None = Field(None, ge=1, le=65535)
    #: TLS for that listener (the scheduler's enableHTTPS); with a client CA, kube-scheduler
    #: must present a certificate signed by it.
    extender_tls_cert: Path | None = None
    extender_tls_key: Path | None = None
    extender_tls_client_ca: Path | None = None
    #: Serve the extender verbs on the REST port as well. Unset: only while that port is open
    #: anyway (no token file: the quickstart, on 127.0.0.1) and no extender listener is set.
    #: kube-scheduler cannot send a token, so with tokens the verbs need the extender listener.
    extender_on_api_port: bool | None = None
    #: Kubernetes: in-cluster config when both are empty; else this kubeconfig file, or a plain
    #: API server URL without auth (local fake API servers in tests and benchmarks).
    kubeconfig: Path | None = None
    kube_api_url: str | None = None
    #: (connect, read) timeout of one Kubernetes API request, seconds.
    kube_timeout_seconds: tuple[float, float] = (3.0, 10.0)
    #: Disable the watchers/controllers (extender-only mode, and most API tests).
    controllers_enabled: bool = True
    #: How often the pool usage that filter reads is re-counted from PostgreSQL.
    catalog_refresh_seconds: float = Field(5.0, gt=0)
    #: How long a filter promise holds a pool's address before bind must come.
    promise_ttl_seconds: float = Field(30.0, gt=0)
    #: Most promises one namespace may hold at once (filter is reachable by strangers too).
    promise_namespace_cap: int = Field(256, ge=1)
    #: How long a released address cools down before another owner may take it (stale ARP,
    #: conntrack and firewall state keyed on the old pod's IP), where the pool entry sets no
    #: ``quarantineSeconds``; 0 frees at once. The same owner gets its address back at once.
    quarantine_seconds: int = Field(30, ge=0, le=7 * 24 * 3600)
    reconciler: ReconcilerSettings = Field(default_factory=ReconcilerSettings)
    watch: WatchSettings = Field(default_factory=WatchSettings)
    leader: LeaderSettings = Field(default_factory=LeaderSettings)
    pools_configmap: PoolConfigMapSettings = Field(default_factory=PoolConfigMapSettings)


    def migrates_on_start(self) -> bool:
        if self.migrate_on_start is not None:
            return self.migrate_on_start
        return self.database_url is None

    def serves_extender_on_api_port(self) -> bool:
        if self.extender_port is not None:
            return False
        if self.extender_on_api_port is not None:
            return self.extender_on_api_port
        return self.auth_tokens_path is None

    def listen_host(self) -> str:
        """Where the REST port listens: ``host``, else all interfaces when tokens protect the
        API (a pod) and loopback when they do not (the quickstart)."""
        if self.host is not None:
            return self.host
        return "0.0.0.0" if self.auth_tokens_path is not None else "127.0.0.1"  # noqa: S104


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; ``get_settings.cache_clear()`` lets tests start over."""
    return Settings()
