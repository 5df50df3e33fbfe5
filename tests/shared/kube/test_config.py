"""Where the API is: Knative's precedence, in-cluster token refresh, errors naming the source."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest

from shared.kube.config import (
    ConfigSource,
    KubeConfigError,
    env_proxy,
    load_api_client,
    load_configuration,
    resolve_source,
)


@pytest.mark.parametrize(
    ("env", "flag", "want"),
    [
        pytest.param(
            {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBECONFIG": "/k"},
            "/f",
            ConfigSource("in-cluster", "", "KUBERNETES_SERVICE_HOST"),
            id="in-cluster-wins",
        ),
        pytest.param(
            {"KUBECONFIG": "/k"},
            "/f",
            ConfigSource("kubeconfig", "/f", "--kubeconfig"),
            id="flag-over-env",
        ),
        pytest.param(
            {"KUBECONFIG": "/k"},
            None,
            ConfigSource("kubeconfig", "/k", "KUBECONFIG"),
            id="env",
        ),
        pytest.param(
            {"HOME": "/home/u", "KUBERNETES_SERVICE_HOST": ""},
            None,
            ConfigSource("kubeconfig", "/home/u/.kube/config", "~/.kube/config"),
            id="home-default",
        ),
    ],
)
def test_resolve_source(env: dict[str, str], flag: str | None, want: ConfigSource) -> None:
    assert resolve_source(env, flag) == want


def kubeconfig(path: Path, server: str = "http://127.0.0.1:8765", token: str = "t0k") -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: c, cluster: {{server: '{server}'}}}}]\n"
        f"users: [{{name: u, user: {{token: {token}}}}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\n"
        "current-context: x\n"
    )
    return path


async def test_http_server_with_bearer_token(tmp_path: Path) -> None:
    """What ``knpy serve`` writes: plain http on loopback and a bearer token."""
    api = await load_api_client({"KUBECONFIG": str(kubeconfig(tmp_path / "kc"))})
    try:
        assert api.configuration.host == "http://127.0.0.1:8765"
        auth = await api.configuration.auth_settings()
        assert auth["BearerToken"]["value"] == "Bearer t0k"
    finally:
        await api.close()


@pytest.mark.parametrize(
    ("env", "flag", "words"),
    [
        pytest.param(
            {"KUBECONFIG": "/nope/kc"}, None, ["/nope/kc", "KUBECONFIG"], id="env-missing"
        ),
        pytest.param({}, "/nope/flag", ["/nope/flag", "--kubeconfig"], id="flag-missing"),
        pytest.param({"HOME": "/nope"}, None, ["/nope/.kube/config"], id="home-missing"),
        pytest.param(
            {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"},
            None,
            ["KUBERNETES_SERVICE_HOST", "token"],
            id="in-cluster-no-token",
        ),
    ],
)
async def test_errors_name_the_source(
    env: dict[str, str], flag: str | None, words: list[str], tmp_path: Path
) -> None:
    with pytest.raises(KubeConfigError) as err:
        await load_api_client(env, flag, token_file=str(tmp_path / "none"))
    for w in words:
        assert w in str(err.value)


async def test_bad_kubeconfig_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "kc"
    bad.write_text("apiVersion: v1\nkind: Config\ncurrent-context: missing\n")
    with pytest.raises(KubeConfigError, match=str(bad)):
        await load_api_client({}, str(bad))


async def test_in_cluster_reads_and_refreshes_the_token(tmp_path: Path) -> None:
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("first")
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    config = await load_configuration(env, token_file=str(token), ca_file=str(ca))
    assert config.host == "https://[fd00::1]:6443"
    assert config.ssl_ca_cert == str(ca)
    assert (await config.auth_settings())["BearerToken"]["value"] == "Bearer first"
    token.write_text("rotated")
    # kubernetes-asyncio re-reads the file once its minute is up; pretend it is.
    hook: Any = config.refresh_api_key_hook
    loader = hook.__closure__[0].cell_contents  # the InClusterConfigLoader
    loader.token_expires_at = datetime.datetime.now() - datetime.timedelta(seconds=1)
    assert (await config.auth_settings())["BearerToken"]["value"] == "Bearer rotated"


@pytest.mark.parametrize(
    ("env", "url", "want"),
    [
        pytest.param({}, "https://10.0.0.1:443", None, id="no-proxy-set"),
        pytest.param(
            {"HTTPS_PROXY": "http://p:3128"}, "https://10.0.0.1", "http://p:3128", id="https"
        ),
        pytest.param(
            {"https_proxy": "http://p:3128"}, "https://api.example.com:6443", "http://p:3128",
            id="lower-case",
        ),
        pytest.param({"HTTPS_PROXY": "http://p"}, "http://10.0.0.1", None, id="scheme-mismatch"),
        pytest.param({"HTTP_PROXY": "http://p"}, "http://127.0.0.1:8080", None, id="loopback"),
        pytest.param({"HTTP_PROXY": "http://p"}, "http://localhost:8080", None, id="localhost"),
        pytest.param(
            {"HTTPS_PROXY": "http://p", "NO_PROXY": "10.0.0.0/8"}, "https://10.1.2.3", None,
            id="no-proxy-cidr",
        ),
        pytest.param(
            {"HTTPS_PROXY": "http://p", "NO_PROXY": ".svc,example.com"},
            "https://api.example.com", None, id="no-proxy-domain-suffix",
        ),
        pytest.param(
            {"HTTPS_PROXY": "http://p", "NO_PROXY": "other.com"}, "https://api.example.com",
            "http://p", id="no-proxy-other",
        ),
        pytest.param({"HTTPS_PROXY": "http://p", "NO_PROXY": "*"}, "https://x", None, id="star"),
    ],
)  # fmt: skip
def test_env_proxy(env: dict[str, str], url: str, want: str | None) -> None:
    assert env_proxy(env, url) == want


async def test_proxy_resolved_once_not_per_request(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "kc", server="https://api.example.com:6443")
    api = await load_api_client({"HTTPS_PROXY": "http://proxy:3128"}, str(path))
    try:
        assert api.configuration.proxy == "http://proxy:3128"
        # No netrc/proxy lookup in a worker thread on every request.
        assert api.rest_client.pool_manager.trust_env is False
    finally:
        await api.close()
