"""Where the Kubernetes API is and how to authenticate: a kubernetes-asyncio ``ApiClient``.

The same rule as Knative's components (knative/pkg injection's ``GetConfig``, client-go's
``clientcmd``): in a pod (``KUBERNETES_SERVICE_HOST`` set) use the service account's token and
CA; otherwise ``--kubeconfig``, else ``$KUBECONFIG``, else ``~/.kube/config``. The environment
is passed in, so nothing below ``main`` reads ``os.environ``.

In a pod the token file is re-read at most once a minute (kubernetes-asyncio's
``refresh_api_key_hook``), so projected, rotating service-account tokens keep working.

Proxies: kubernetes-asyncio's aiohttp session has ``trust_env=True``, which makes aiohttp look
up ``~/.netrc`` and the proxy variables in a worker thread on *every* request (two thread hops,
about a third of a local API call's CPU). Instead the proxy is resolved once here, from the
kubeconfig's ``proxy-url`` or else the passed-in ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``
(as client-go's ``ProxyFromEnvironment``), and the session's per-request lookups are turned off.
"""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import ConfigException
from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader
from kubernetes_asyncio.config.kube_config import load_kube_config

__all__ = [
    "SERVICE_ACCOUNT_CA",
    "SERVICE_ACCOUNT_TOKEN",
    "ConfigSource",
    "KubeConfigError",
    "env_proxy",
    "load_api_client",
    "load_configuration",
    "resolve_source",
]

SERVICE_ACCOUNT_TOKEN: Final = "/var/run/secrets/kubernetes.io/serviceaccount/token"
SERVICE_ACCOUNT_CA: Final = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
# Every open watch holds a connection; kubernetes-asyncio's default pool is 100.
DEFAULT_POOL_SIZE: Final = 100


class KubeConfigError(ValueError):
    """The API's address or credentials could not be loaded; the message names the source."""


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """Where the configuration comes from: ``in-cluster`` or a kubeconfig path (and why)."""

    kind: str  # "in-cluster" or "kubeconfig"
    path: str  # the kubeconfig path ("" in cluster); KUBECONFIG may list several with ":"
    origin: str  # "KUBERNETES_SERVICE_HOST", "--kubeconfig", "KUBECONFIG" or "~/.kube/config"


def resolve_source(env: Mapping[str, str], kubeconfig: str | None = None) -> ConfigSource:
    """Pick the configuration source by Knative's precedence (pure; no file is read)."""
    if env.get("KUBERNETES_SERVICE_HOST"):
        return ConfigSource("in-cluster", "", "KUBERNETES_SERVICE_HOST")
    if kubeconfig:
        return ConfigSource("kubeconfig", kubeconfig, "--kubeconfig")
    if env.get("KUBECONFIG"):
        return ConfigSource("kubeconfig", env["KUBECONFIG"], "KUBECONFIG")
    home = env.get("HOME") or os.path.expanduser("~")
    return ConfigSource("kubeconfig", os.path.join(home, ".kube", "config"), "~/.kube/config")


def env_proxy(env: Mapping[str, str], url: str | None) -> str | None:
    """The proxy for ``url`` from ``HTTPS_PROXY``/``HTTP_PROXY`` (either case), or None when
    there is none, the host is loopback, or ``NO_PROXY`` names it (``*``, a domain suffix, an
    IP or a CIDR), as Go's ``httpproxy.FromEnvironment``."""
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    proxy = _env(env, "https_proxy" if parts.scheme == "https" else "http_proxy")
    if not proxy or not host or host == "localhost":
        return None
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None and ip.is_loopback:
        return None
    for entry in (_env(env, "no_proxy") or "").split(","):
        e = entry.strip().lower()
        if e == "*":
            return None
        if not e:
            continue
        if ip is not None:
            try:
                if ip in ipaddress.ip_network(e, strict=False):
                    return None
                continue
            except ValueError:
                pass
        name = e.rsplit(":", 1)[0] if e.count(":") == 1 else e
        name = name.lstrip(".")
        if host == name or host.endswith("." + name):
            return None
    return proxy


def _env(env: Mapping[str, str], lower: str) -> str | None:
    return env.get(lower.upper()) or env.get(lower) or None


def _no_per_request_env_lookups(api: ApiClient) -> None:
    """Turn off aiohttp's per-request netrc/proxy lookups (see the module docstring)."""
    session = api.rest_client.pool_manager
    if getattr(session, "_trust_env", False):
        session._trust_env = False


async def load_configuration(
    env: Mapping[str, str],
    kubeconfig: str | None = None,
    *,
    token_file: str = SERVICE_ACCOUNT_TOKEN,
    ca_file: str = SERVICE_ACCOUNT_CA,
) -> Configuration:
    """The kubernetes-asyncio ``Configuration`` for this environment.

    Raises:
        KubeConfigError: naming the variable or file that could not be used.
    """
    source = resolve_source(env, kubeconfig)
    config = Configuration()
    config.connection_pool_maxsize = DEFAULT_POOL_SIZE
    if source.kind == "in-cluster":
        try:
            InClusterConfigLoader(
                token_filename=token_file,
                cert_filename=ca_file,
                try_refresh_token=True,
                environ=dict(env),
            ).load_and_set(config)
        except (ConfigException, OSError) as e:
            raise KubeConfigError(
                f"in-cluster config (KUBERNETES_SERVICE_HOST is set; token {token_file}, "
                f"CA {ca_file}): {e}"
            ) from e
        config.proxy = env_proxy(env, config.host)
        return config
    paths = [p for p in source.path.split(os.pathsep) if p]
    missing = [p for p in paths if not os.path.isfile(p)]
    if not paths or missing:
        raise KubeConfigError(
            f"kubeconfig {', '.join(missing) or repr(source.path)} (from {source.origin}) "
            "does not exist; set --kubeconfig or KUBECONFIG, or run in a pod"
        )
    try:
        await load_kube_config(
            config_file=source.path, client_configuration=config, persist_config=False
        )
    except (ConfigException, OSError, ValueError, KeyError, TypeError) as e:
        raise KubeConfigError(f"kubeconfig {source.path} (from {source.origin}): {e}") from e
    if not config.proxy:
        config.proxy = env_proxy(env, config.host)
    return config


async def load_api_client(
    env: Mapping[str, str],
    kubeconfig: str | None = None,
    *,
    token_file: str = SERVICE_ACCOUNT_TOKEN,
    ca_file: str = SERVICE_ACCOUNT_CA,
) -> ApiClient:
    """An ``ApiClient`` for this environment; close it (``await api.close()``) on shutdown.

    Raises:
        KubeConfigError: naming the variable or file that could not be used.
    """
    config = await load_configuration(env, kubeconfig, token_file=token_file, ca_file=ca_file)
    api = ApiClient(configuration=config)
    _no_per_request_env_lookups(api)
    return api
