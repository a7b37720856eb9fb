"""Start a local Ray, or join an existing cluster, with every listener on loopback and a clear auth story.

Ray 2.60 facts this module handles (see ``docs/USAGE.md``, "Ray backend"):

* On Linux Ray binds to the machine's network address unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is
  set before ``ray`` is imported; a local cluster started here always gets that, so the GCS, raylet,
  workers and dashboard listen on 127.0.0.1 only.
* Token authentication is on by default: the dashboard and its HTTP API answer 401 without
  ``Authorization: Bearer <token>``; the token is ``$RAY_AUTH_TOKEN``, the file ``$RAY_AUTH_TOKEN_PATH`` or
  ``~/.ray/auth_token`` (written by Ray at first start). ``RAY_AUTH_MODE=disabled`` turns it off; we honour
  that for a local cluster only because it is loopback-bound, and say so.
* The dashboard port moves when 8265 is taken: the real URL comes from the context ``ray.init`` returns.
* Joining an address that does not answer makes ``ray.init`` wait for minutes; a short TCP + HTTP/2
  probe turns that into an immediate :class:`cvt.UserError`.

Never ``ray stop`` from here: it kills every Ray process on the machine, other users' included.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from cvt import UserError

__all__ = ["RayCluster", "init_ray", "check_trial_resources", "auth_token", "LOOPBACK"]

_log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_AUTH_ENV = "RAY_AUTH_MODE"
_PROBE_TIMEOUT_S = 3.0
# Client connection preface of HTTP/2 followed by an empty SETTINGS frame: a gRPC server (Ray's GCS)
# answers with a SETTINGS frame of its own; anything else (closed port, other service) does not.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


@dataclass(frozen=True)
class RayCluster:
    """The Ray this process is connected to.

    Attributes:
        address: GCS address (``HOST:PORT``), what ``--ray-address`` and ``ray start --address`` take.
        dashboard_url: ``http://HOST:PORT`` of the dashboard, or None if it is not running.
        started_here: this process started it (``ray.shutdown()`` stops it); False for a joined cluster.
        auth: ``"token"`` or ``"disabled"`` (the dashboard's own answer when it is reachable).
        nodes: per alive node, its resources (``{"CPU": 2.0, "GPU": 1.0, ...}``).
    """

    address: str
    dashboard_url: str | None
    started_here: bool
    auth: str
    nodes: tuple[Mapping[str, float], ...] = field(default_factory=tuple)

    def total(self, resource: str) -> float:
        return sum(float(n.get(resource, 0.0)) for n in self.nodes)

    def largest(self, resource: str) -> float:
        """The most of ``resource`` any single node has (a trial runs on one node)."""
        return max((float(n.get(resource, 0.0)) for n in self.nodes), default=0.0)

    def auth_headers(self) -> dict[str, str]:
        """Headers for the dashboard's HTTP API (empty when authentication is off)."""
        if self.auth != "token":
            return {}
        token = auth_token()
        if token is None:
            raise UserError("the Ray cluster uses token authentication but no token was found: set "
                            "RAY_AUTH_TOKEN, or copy ~/.ray/auth_token from the head node (ray get-auth-token)")
        return {"Authorization": f"Bearer {token}"}

    def get_json(self, path: str, timeout: float = 10.0) -> Any:
        """GET ``path`` (e.g. ``/api/jobs/``) from the dashboard, authenticated; the decoded JSON."""
        if self.dashboard_url is None:
            raise UserError("the Ray dashboard is not running on this cluster (start it with include_dashboard)")
        request = urllib.request.Request(self.dashboard_url + path, headers=self.auth_headers())
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)

    def describe(self) -> list[str]:
        """Lines for the user: where the dashboard is and how to open it."""
        where = "started here" if self.started_here else "joined"
        lines = [f"ray: {where} cluster at {self.address} with {self.total('CPU'):g} CPU(s), "
                 f"{self.total('GPU'):g} GPU(s) on {len(self.nodes)} node(s)"]
        if self.dashboard_url is None:
            lines.append("ray dashboard: not running")
            return lines
        lines.append(f"ray dashboard: {self.dashboard_url}")
        if self.auth == "token":
            source = _token_source()
            shell = source if source.startswith("$") else f"$(cat {source})"
            lines.append(f"ray dashboard: token authentication is on; log in with the token from {source} "
                         f"(API: curl -H \"Authorization: Bearer {shell}\" {self.dashboard_url}/api/jobs/)")
        elif self.started_here:
            lines.append(f"ray dashboard: authentication is off ({_AUTH_ENV}=disabled); every Ray listener is bound "
                         f"to {LOOPBACK}, so only users of this machine can reach it")
        else:
            lines.append("ray dashboard: this cluster runs without authentication")
        return lines


def auth_token() -> str | None:
    """The Ray token this process would send: ``$RAY_AUTH_TOKEN``, ``$RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _token_source() -> str:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "$RAY_AUTH_TOKEN"
    return os.environ.get("RAY_AUTH_TOKEN_PATH") or "~/.ray/auth_token"


def _bind_loopback() -> None:
    """Make a local Ray listen on 127.0.0.1 only (also for the processes it starts)."""
    os.environ[_LOOPBACK_ENV] = "0"
    if "ray" in sys.modules:
        # Read once at import; an earlier import (a test, a notebook) must see the setting too.
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def _probe(address: str) -> None:
    """Fail fast unless ``HOST:PORT`` answers like a gRPC server (Ray's GCS)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"--ray-address {address!r}: give HOST:PORT of the head node's GCS (ray start --head "
                        f"prints it, default port 6379) or 'auto'")
    try:
        with socket.create_connection((host, int(port)), timeout=_PROBE_TIMEOUT_S) as conn:
            conn.settimeout(_PROBE_TIMEOUT_S)
            conn.sendall(_H2_PREFACE)
            reply = conn.recv(9)
    except OSError as err:
        raise UserError(f"--ray-address {address}: no Ray cluster answers there ({err.strerror or err}); start "
                        f"one with 'ray start --head' or drop --ray-address to run a local Ray") from None
    if len(reply) < 9 or reply[3] != 4:  # frame type 4 = SETTINGS
        raise UserError(f"--ray-address {address}: something answers there, but not a Ray head node (GCS); "
                        f"check the port (ray start --head prints it, default 6379)")


def init_ray(address: str | None = None, *, num_cpus: float | None = None, num_gpus: int | None = None,
             temp_dir: str | Path | None = None, dashboard: bool = True,
             job_metadata: Mapping[str, str] | None = None) -> RayCluster:
    """Connect this process to Ray: join ``address``, or start a loopback-only local cluster.

    A process connected already (a test's cluster, a notebook) keeps its connection: it is described and
    used as it is (``started_here`` False, so its owner shuts it down), whatever ``address`` says.

    Args:
        address: None: start a local Ray; ``"auto"``: the cluster ``ray start`` left on this machine;
            ``HOST:PORT``: that head node's GCS.
        num_cpus, num_gpus: resources of a local cluster (Ray's detection when None).
        temp_dir: session/log directory of a local cluster (Ray's default ``/tmp/ray`` when None).
        dashboard: start the dashboard with a local cluster.
        job_metadata: shown on the dashboard's Jobs page for this driver.

    Returns:
        A :class:`RayCluster` describing what this process is connected to.

    Raises:
        UserError: the address does not answer, or the cluster wants a token this process lacks.

    Example:
        >>> cluster = init_ray(num_cpus=2, temp_dir="/tmp/my-ray")  # doctest: +SKIP
        >>> cluster.dashboard_url  # doctest: +SKIP
        'http://127.0.0.1:8265'
    """
    import ray

    if ray.is_initialized():  # a caller (test, notebook) connected this process already: use that
        return _describe(ray.init(ignore_reinit_error=True), started_here=False)
    started_here = address is None
    if started_here:
        _bind_loopback()
    elif address != "auto":
        _probe(address)
    from ray.exceptions import AuthenticationError

    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if job_metadata:
        kwargs["job_config"] = ray.job_config.JobConfig(metadata=dict(job_metadata))
    if started_here:
        kwargs.update(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=dashboard, dashboard_host=LOOPBACK)
        if temp_dir is not None:
            kwargs["_temp_dir"] = str(temp_dir)
    try:
        context = ray.init(address=address, **kwargs)
    except AuthenticationError as err:
        raise UserError(f"Ray cluster at {address}: authentication failed ({str(err).splitlines()[0]}); set "
                        f"RAY_AUTH_TOKEN or copy ~/.ray/auth_token from the head node") from None
    except ConnectionError as err:
        raise UserError(f"--ray-address {address}: {str(err).splitlines()[0].rstrip('.')}; start a cluster with "
                        f"'ray start --head' or drop --ray-address to run a local Ray") from None
    cluster = _describe(context, started_here=started_here)
    if started_here and context.address_info.get("node_ip_address") != LOOPBACK:
        _log.warning("warning: the local Ray bound to %s, not %s (ray was configured earlier in this process)",
                     context.address_info.get("node_ip_address"), LOOPBACK)
    return cluster


def _describe(context: Any, *, started_here: bool) -> RayCluster:
    import ray

    info = context.address_info
    url = f"http://{context.dashboard_url}" if context.dashboard_url else None
    nodes = tuple(dict(n["Resources"]) for n in ray.nodes() if n.get("Alive"))
    return RayCluster(address=info.get("gcs_address") or info.get("address") or "?", dashboard_url=url,
                      started_here=started_here, auth=_auth_mode(url), nodes=nodes)


def _auth_mode(url: str | None) -> str:
    """The dashboard's own answer (public endpoint), else this process's setting."""
    if url is not None:
        try:
            with urllib.request.urlopen(url + "/api/authentication_mode", timeout=5) as response:
                return str(json.load(response).get("authentication_mode", "token"))
        except (OSError, ValueError):  # URLError is an OSError
            pass  # dashboard not up yet or unreachable from here: fall back to our own setting
    return "disabled" if os.environ.get(_AUTH_ENV, "token").lower() == "disabled" else "token"


def check_trial_resources(cluster: RayCluster, cpus: float, gpus: float) -> None:
    """Refuse per-trial resources no single node of the cluster has (the trial would wait forever)."""
    if gpus > 0 and cluster.largest("GPU") < gpus:
        have = cluster.largest("GPU")
        raise UserError(f"--gpus-per-trial {gpus:g}: the Ray cluster's largest node has {have:g} GPU(s)"
                        f"{' (none at all)' if have == 0 else ''}; lower it, or join a cluster with GPUs "
                        f"(--ray-address)")
    if cluster.largest("CPU") < cpus:
        raise UserError(f"--cpus-per-trial {cpus:g}: the Ray cluster's largest node has {cluster.largest('CPU'):g} "
                        f"CPU(s); lower it")
