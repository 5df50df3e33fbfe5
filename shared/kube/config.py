"""Where the Kubernetes API is and how to authenticate: a kubernetes-asyncio ``ApiClient``.

The same rule as Knative's components (knative/pkg injection's ``GetConfig``, client-go's
``clientcmd``): in a pod (``KUBERNETES_SERVICE_HOST`` set) use the service account's token and
CA; otherwise ``--kubeconfig``, else ``$KUBECONFIG``, else ``~/.kube/config``. The environment
is passed in, so nothing below ``main`` reads ``os.environ``.

In a pod the token file is re-read at most once a minute (kubernetes-asyncio's
``refresh_api_key_hook``), so projected, rotating service-account tokens keep working.
"""

from __future__ import annotations

import os
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
    "load_api_client",
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
    return ApiClient(configuration=config)
