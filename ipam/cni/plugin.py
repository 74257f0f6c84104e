"""``ipam-cni``: the CNI IPAM plugin (spec 1.0.0, results down to 0.1.0).

A main plugin (bridge, macvlan, ipvlan, vlan) runs it with the network config on stdin and
the CNI_* variables set. ADD and CHECK read the pod's allocation from the ipam service,
DEL tells the service the sandbox is gone; the service owns every decision (which address,
when to release), so the plugin keeps no state on the node.

Startup cost matters (once per pod start on every node): only ``json``, ``os`` and ``sys``
load up front; the HTTP client and the result builder load when a command needs them.
"""

# Commands import their modules lazily on purpose: VERSION and config errors skip them.

from __future__ import annotations

import json
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import IO, Any, NoReturn

    from ipam.cni.client import Endpoint
    from ipam.cni.result import Address

CNI_VERSION = "1.0.0"
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0")

# Error codes. 1-99 are the spec's; 100+ are ours (the spec reserves them for plugins).
INCOMPATIBLE_VERSION = 1
INVALID_ENVIRONMENT = 4
DECODING_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
UNEXPECTED = 100  # the service answered something this plugin does not understand
NO_ADDRESS = 101  # the pod is managed but has no address yet (404 not_found)
NOT_MANAGED = 102  # the pod does not request the extended resource (404 not_managed)
AUTH = 103  # token missing, unreadable or refused (401/403)
STALE_POD = 104  # the service's pod has another uid than the runtime's
BAD_RESPONSE = 105  # 200 with a body that is not a valid allocation
CHECK_MISMATCH = 106  # prevResult does not hold exactly the allocated addresses
TLS_FAILURE = 107  # https with a certificate that does not verify or a bad caFile

#: Longer than any runtime waits for one IPAM call (kubelet's CRI calls time out after 4 min);
#: a socket timeout has to fit a C ``timeval``, and 1e308 raised OverflowError there.
MAX_TIMEOUT_SECONDS = 300
#: Linux IFNAMSIZ is 16 with the terminating NUL (libcni's ValidateInterfaceName).
MAX_IFNAME = 15

EXTENDED_RESOURCE = "tke.cloud.tencent.com/eni-ip"
POD_UNKNOWN_CODES = ("not_found", "not_managed")
"""The only 404 codes that speak of the pod; any other 404 means ipam.url is wrong."""


class CniError(Exception):
    """A failure reported to the runtime as CNI error JSON on stdout (exit code 1)."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details


class Config:
    """The parts of the network config this plugin uses, validated."""

    __slots__ = ("ca_file", "prev_result", "timeout", "token_file", "url", "version")

    def __init__(self, raw: bytes) -> None:
        """Parse stdin; raise CniError 6 (not JSON), 1 (version) or 7 (bad ``ipam``)."""
        try:
            conf = loads(raw)
        except ValueError as exc:
            raise CniError(
                DECODING_FAILURE, f"network config on stdin is not JSON: {exc}"
            ) from None
        if not isinstance(conf, dict):
            raise CniError(DECODING_FAILURE, "network config on stdin is not a JSON object")
        # The spec's default for a config without cniVersion is 0.1.0.
        version = conf.get("cniVersion") or "0.1.0"
        if version not in SUPPORTED_VERSIONS:
            raise CniError(
                INCOMPATIBLE_VERSION,
                f"cniVersion {version!r} is not supported",
                "supported: " + ", ".join(SUPPORTED_VERSIONS),
            )
        self.version: str = version
        self.prev_result: object = conf.get("prevResult")
        ipam = conf.get("ipam")
        if not isinstance(ipam, dict):
            raise CniError(INVALID_CONFIG, "network config has no 'ipam' object")
        url = ipam.get("url")
        if not isinstance(url, str) or not url:
            raise CniError(INVALID_CONFIG, "ipam.url is missing: set it to the ipam service URL")
        self.url: str = url
        self.token_file = _optional_str(ipam, "tokenFile")
        self.ca_file = _optional_str(ipam, "caFile")
        timeout = ipam.get("timeoutSeconds", 5)
        # ``not 0 < t <= max`` also refuses NaN and infinity (JSON's 1e999).
        if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                or not 0 < timeout <= MAX_TIMEOUT_SECONDS):
            raise CniError(
                INVALID_CONFIG,
                f"ipam.timeoutSeconds {_short(timeout)} is not a number of seconds in "
                f"(0, {MAX_TIMEOUT_SECONDS}]",
            )
        self.timeout = float(timeout)

    def endpoint(self) -> Endpoint:
        """The service endpoint; imports the HTTP client only now."""
        from ipam.cni.client import Endpoint

        try:
            return Endpoint(self.url, self.timeout, self.ca_file)
        except ValueError as exc:
            raise CniError(INVALID_CONFIG, f"ipam.{exc}") from None

    def token(self) -> str | None:
        """The bearer token, read per call so a rotated Secret is picked up without restarts."""
        if self.token_file is None:
            return None
        try:
            with open(self.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise CniError(
                AUTH, f"cannot read ipam.tokenFile {self.token_file}: {exc.strerror or exc}"
            ) from None
        if not token:
            raise CniError(AUTH, f"ipam.tokenFile {self.token_file} is empty")
        if not (token.isascii() and token.isprintable()):  # it goes into an HTTP header
            raise CniError(AUTH, f"ipam.tokenFile {self.token_file} is not a one-line token")
        return token


def loads(data: bytes | str) -> Any:
    """``json.loads`` whose every failure is a ``ValueError``: deep nesting (100,000
    brackets) raises RecursionError, and a bad encoding UnicodeDecodeError (a ValueError)."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def _optional_str(ipam: dict[str, Any], key: str) -> str | None:
    value = ipam.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise CniError(INVALID_CONFIG, f"ipam.{key} is not a string")
    return value


class Pod:
    """The pod identity the runtime passes in CNI_ARGS (kubelet sets the K8S_POD_* keys)."""

    __slots__ = ("container_id", "ifname", "name", "namespace", "uid")

    def __init__(self, env: Mapping[str, str]) -> None:
        """Raise CniError 4 for a missing CNI_CONTAINERID or a malformed CNI_ARGS."""
        self.container_id = env.get("CNI_CONTAINERID", "")
        if not self.container_id:
            raise CniError(INVALID_ENVIRONMENT, "CNI_CONTAINERID is not set")
        # Required for ADD, CHECK and DEL by the spec (and by libcni's skel, which every
        # reference plugin uses); a runtime that omits it is misconfigured.
        self.ifname = env.get("CNI_IFNAME", "")
        _check_ifname(self.ifname)
        args = parse_cni_args(env.get("CNI_ARGS", ""))
        self.namespace = args.get("K8S_POD_NAMESPACE", "")
        self.name = args.get("K8S_POD_NAME", "")
        self.uid = args.get("K8S_POD_UID") or None

    @property
    def known(self) -> bool:
        return bool(self.namespace and self.name)

    def require(self) -> None:
        """ADD/CHECK cannot do anything without knowing which pod they serve."""
        missing = [
            k
            for k, v in (("K8S_POD_NAMESPACE", self.namespace), ("K8S_POD_NAME", self.name))
            if not v
        ]
        if missing:
            raise CniError(
                INVALID_ENVIRONMENT,
                f"CNI_ARGS has no {' or '.join(missing)}: ipam-cni assigns addresses per "
                "Kubernetes pod and needs the runtime (kubelet through containerd or CRI-O) "
                "to pass the pod's namespace and name",
            )

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def _check_ifname(name: str) -> None:
    """libcni's ValidateInterfaceName: what Linux accepts as a link name."""
    if not name:
        raise CniError(INVALID_ENVIRONMENT, "CNI_IFNAME is not set")
    if len(name) > MAX_IFNAME or name in (".", "..") or any(
        c in "/:" or c.isspace() for c in name
    ):
        raise CniError(
            INVALID_ENVIRONMENT,
            f"CNI_IFNAME {_short(name)} is not an interface name (at most {MAX_IFNAME} "
            "characters, no '/', ':' or whitespace, not '.' or '..')",
        )


def parse_cni_args(raw: str) -> dict[str, str]:
    """Split ``K=V;K=V``. Unknown keys are ignored (IgnoreUnknown or not): we read only ours."""
    args: dict[str, str] = {}
    for pair in raw.split(";"):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(INVALID_ENVIRONMENT, f"CNI_ARGS has a malformed pair {pair!r}")
        args[key] = value
    return args


def _call(
    config: Config, method: str, pod: Pod, leaf: str, body: bytes | None = None
) -> tuple[int, bytes, str]:
    """One request to the service; transport failures become CniError. Returns the URL too."""
    from ipam.cni.client import TLSFailure, Unreachable

    endpoint = config.endpoint()
    token = config.token()
    path = endpoint.pod_path(pod.namespace, pod.name, leaf)
    url = endpoint.origin + path
    try:
        status, data = endpoint.request(method, path, token, body)
    except Unreachable as exc:
        raise CniError(
            TRY_AGAIN_LATER, f"ipam service unavailable: {exc}", f"{method} {url}"
        ) from None
    except TLSFailure as exc:
        raise CniError(TLS_FAILURE, str(exc), f"{method} {url}") from None
    return status, data, f"{method} {url}"


def _error_envelope(data: bytes) -> tuple[str, str, str] | None:
    """(code, message, details) from ``{"error": {...}}``, or None if the body is not one."""
    try:
        body = loads(data)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    code, message, details = error.get("code"), error.get("message"), error.get("details")
    return (
        code if isinstance(code, str) else "",
        message if isinstance(message, str) else "",
        json.dumps(details, sort_keys=True) if details else "",
    )


def _service_error(status: int, data: bytes, pod: Pod, request: str, config: Config) -> CniError:
    """Map a non-2xx answer to the CNI error the runtime and the operator should see."""
    envelope = _error_envelope(data)
    code, message, service_details = envelope or ("", "", "")
    details = f"{request} -> HTTP {status}"
    if code:
        details += f" {code}"
    if service_details:
        details += f"; details: {service_details}"
    if status in (401, 403):
        hint = "ipam.tokenFile is not set" if config.token_file is None else "check ipam.tokenFile"
        return CniError(
            AUTH,
            f"ipam service refused the plugin's credentials (HTTP {status}): "
            f"{message or 'no error message'}; {hint}",
            details,
        )
    if status in (408, 425, 429) or status >= 500:
        return CniError(
            TRY_AGAIN_LATER,
            f"ipam service unavailable (HTTP {status}): {message or 'retry later'}",
            details,
        )
    if status == 404 and code == "not_managed":
        return CniError(
            NOT_MANAGED,
            message or f"pod {pod} is not managed by ipam: it does not request {EXTENDED_RESOURCE}",
            details,
        )
    if status == 404 and code == "not_found":
        return CniError(NO_ADDRESS, message or f"pod {pod} has no address yet", details)
    if status == 404:
        # No envelope (another server's router) or route_not_found: the URL is wrong.
        return CniError(
            UNEXPECTED, "ipam service has no such endpoint (HTTP 404): is ipam.url right?", details
        )
    return CniError(
        UNEXPECTED, f"ipam service answered HTTP {status}: {message or 'no error message'}", details
    )


def _allocation(config: Config, pod: Pod) -> list[Address]:
    """GET the pod's addresses; every failure becomes the matching CniError."""
    from ipam.cni.result import parse_ips

    pod.require()
    status, data, request = _call(config, "GET", pod, "ips")
    if status != 200:
        raise _service_error(status, data, pod, request, config)
    try:
        body = loads(data)
        if not isinstance(body, dict):
            raise ValueError("the answer is not a JSON object")
        addresses = parse_ips(body.get("ips"))
    except ValueError as exc:
        raise CniError(
            BAD_RESPONSE, f"ipam service sent an invalid allocation for pod {pod}: {exc}", request
        ) from None
    uid = body.get("uid")
    if pod.uid and uid and uid != pod.uid:
        raise CniError(
            STALE_POD,
            f"ipam service holds pod {pod} with uid {uid} but the runtime starts uid {pod.uid}: "
            "the pod was recreated and the service has not caught up yet",
            request,
        )
    if not addresses:
        raise CniError(NO_ADDRESS, f"pod {pod} has no address yet", request)
    return addresses


def cmd_add(config: Config, pod: Pod) -> dict[str, Any]:
    """ADD: the allocation as a CNI result of the config's version."""
    from ipam.cni.result import build_result

    return build_result(config.version, _allocation(config, pod))


def cmd_check(config: Config, pod: Pod) -> None:
    """CHECK: prevResult must hold exactly the addresses the service allocated."""
    from ipam.cni.result import CHECK_VERSIONS, prev_addresses

    if config.version not in CHECK_VERSIONS:
        raise CniError(
            INCOMPATIBLE_VERSION, f"CHECK is not defined for cniVersion {config.version}"
        )
    if config.prev_result is None:
        raise CniError(INVALID_CONFIG, "CHECK needs prevResult in the network config")
    try:
        found = prev_addresses(config.prev_result)
    except ValueError as exc:
        raise CniError(INVALID_CONFIG, str(exc)) from None
    expected = {a.cidr for a in _allocation(config, pod)}
    if found != expected:
        raise CniError(
            CHECK_MISMATCH,
            f"pod {pod} has {', '.join(sorted(found)) or 'no address'} but the ipam service "
            f"allocated {', '.join(sorted(expected))}",
        )


def cmd_del(config: Config, pod: Pod) -> None:
    """DEL: report the dead sandbox; idempotent, and it fails only when retrying can help.

    The service applies the release policy, so an unreachable service is an error (code 11,
    the runtime retries) rather than a silent success that would leak the address.
    """
    if not pod.known:
        # Nothing was allocated through us without a pod identity (ADD would have failed).
        print(
            "ipam-cni: DEL without K8S_POD_NAMESPACE/K8S_POD_NAME: nothing to release",
            file=sys.stderr,
        )
        return
    body = json.dumps({"container_id": pod.container_id, "uid": pod.uid}).encode()
    status, data, request = _call(config, "POST", pod, "container-deleted", body)
    if 200 <= status < 300:
        return
    envelope = _error_envelope(data)
    if status == 404 and envelope is not None and envelope[0] in POD_UNKNOWN_CODES:
        return  # the service holds nothing for this pod: already released
    raise _service_error(status, data, pod, request, config)


def run(env: Mapping[str, str], stdin: IO[bytes], stdout: IO[str]) -> int:
    """Execute one CNI command; returns the exit code. Never raises."""
    version = CNI_VERSION
    try:
        command = env.get("CNI_COMMAND", "")
        if command == "VERSION":
            _emit(
                stdout, {"cniVersion": CNI_VERSION, "supportedVersions": list(SUPPORTED_VERSIONS)}
            )
            return 0
        if command not in ("ADD", "DEL", "CHECK"):
            raise CniError(
                INVALID_ENVIRONMENT,
                f"CNI_COMMAND {command!r} is not one of ADD, DEL, CHECK, VERSION",
            )
        config = Config(stdin.read())
        version = config.version
        pod = Pod(env)
        if command == "ADD":
            _emit(stdout, cmd_add(config, pod))
        elif command == "CHECK":
            cmd_check(config, pod)
        else:
            cmd_del(config, pod)
        return 0
    except CniError as exc:
        error: dict[str, Any] = {"cniVersion": version, "code": exc.code, "msg": exc.msg}
        if exc.details:
            error["details"] = exc.details  # a string: Go's types.Error rejects anything else
        _emit(stdout, error)
        return 1
    except Exception as exc:  # a traceback is no CNI error: report a bug as code 100
        _emit(
            stdout,
            {
                "cniVersion": version,
                "code": UNEXPECTED,
                "msg": f"ipam-cni internal error: {type(exc).__name__}: {exc}",
            },
        )
        return 1


def _emit(stdout: IO[str], obj: dict[str, Any]) -> None:
    stdout.write(json.dumps(obj))
    stdout.write("\n")
    stdout.flush()


def main() -> NoReturn:
    """Console-script entry point."""
    sys.exit(run(os.environ, sys.stdin.buffer, sys.stdout))


if __name__ == "__main__":
    main()
