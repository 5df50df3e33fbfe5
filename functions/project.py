"""A function's project on disk: ``func.yaml`` read, checked and written with Knative's names.

The field names and nesting are those of Knative's ``Function`` struct
(knative/func pkg/functions/function.go, function_options.go, function_envs.go,
function_volumes.go, function_labels.go), so a ``func.yaml`` written by Knative's ``func`` reads
here and ours reads there. Knative's YAML decoding ignores a field it does not know, which
hides a typo (``deploy.option.scale``) until the deployed function behaves oddly; here an
unknown field is an error that names it and lists the fields its parent knows.

``run.envs`` values may be ``{{ env:NAME }}`` (the developer's environment); the secret and
ConfigMap forms (``{{ secret:name:key }}``, ``{{ configMap:name:key }}``) exist only in a
cluster or on ``knpy serve``, so ``resolve_envs`` refuses them with a message saying so.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import yaml

__all__ = [
    "FUNC_YAML",
    "RUN_DATA_DIR",
    "SPEC_VERSION",
    "Env",
    "FunctionProject",
    "ProjectError",
    "duration_s",
    "find_root",
    "load",
    "resolve_envs",
    "source_files",
    "write",
]

FUNC_YAML: Final = "func.yaml"
# Knative's runtime metadata directory (pkg/functions/function.go RunDataDir): knpy keeps the
# running instance's address there, as Knative keeps its instances'.
RUN_DATA_DIR: Final = ".func"
# The latest of Knative's func.yaml migrations (pkg/functions/function_migrations.go).
SPEC_VERSION: Final = "0.36.0"
Invoke = Literal["http", "cloudevent"]
INVOKE_FORMATS: Final[tuple[Invoke, ...]] = ("http", "cloudevent")
_NAME: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # Function.Name's jsonschema
_ENV_NAME: Final = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")  # Env.Name's jsonschema
_TEMPLATE: Final = re.compile(r"^\{\{\s*(\w+):([^}]*?)\s*\}\}$")
_SKIP_DIRS: Final = frozenset(
    {".func", ".venv", "venv", ".git", "__pycache__", ".pytest_cache", ".mypy_cache",
     ".ruff_cache", "node_modules", "build", "dist"}
)  # fmt: skip
_WATCHED_SUFFIXES: Final = frozenset({".py", ".yaml", ".yml", ".toml", ".json", ".txt", ".cfg"})


class ProjectError(Exception):
    """func.yaml is missing or wrong; the message says which field and what to do."""


# -- the schema ----------------------------------------------------------------------------------
# A mapping's known keys, each to its own shape: a nested Schema, SCALAR, MAP (free-form string
# keys, e.g. annotations), SCALARS (a list of scalars), or a one-element list holding the Schema
# of every item (a list of mappings).
class _Leaf:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


SCALAR: Final = _Leaf("a scalar")
MAP: Final = _Leaf("a mapping")
SCALARS: Final = _Leaf("a list")
Schema = dict[str, Any]

_RESOURCES: Final[Schema] = {"cpu": SCALAR, "memory": SCALAR}
_VOLUME: Final[Schema] = {
    "secret": SCALAR,
    "configMap": SCALAR,
    "persistentVolumeClaim": {"claimName": SCALAR, "readOnly": SCALAR},
    "emptyDir": {"medium": SCALAR, "sizeLimit": SCALAR},
    "path": SCALAR,
}
_ENV: Final[Schema] = {"name": SCALAR, "value": SCALAR}
SCHEMA: Final[Schema] = {
    "specVersion": SCALAR,
    "name": SCALAR,
    "domain": SCALAR,
    "runtime": SCALAR,
    "registry": SCALAR,
    "registryInsecure": SCALAR,
    "image": SCALAR,
    "namespace": SCALAR,
    "deployer": SCALAR,
    "created": SCALAR,
    "invoke": SCALAR,
    "build": {
        "git": {"url": SCALAR, "revision": SCALAR, "contextDir": SCALAR},
        "builderImages": MAP,
        "buildpacks": SCALARS,
        "builder": SCALAR,
        "buildEnvs": [_ENV],
        "pvcSize": SCALAR,
        "remoteStorageClass": SCALAR,
        "baseImage": SCALAR,
        "volumes": [{"hostPath": SCALAR, "path": SCALAR}],
    },
    "run": {
        "volumes": [_VOLUME],
        "envs": [_ENV],
        "startTimeout": SCALAR,
        "kafka": {"brokers": SCALAR, "topic": SCALAR, "consumerGroup": SCALAR},
    },
    "deploy": {
        "namespace": SCALAR,
        "image": SCALAR,
        "annotations": MAP,
        "options": {
            "scale": {
                "min": SCALAR,
                "max": SCALAR,
                "metric": SCALAR,
                "target": SCALAR,
                "utilization": SCALAR,
            },
            "resources": {
                "requests": _RESOURCES,
                "limits": {**_RESOURCES, "concurrency": SCALAR},
            },
        },
        "labels": [{"key": SCALAR, "value": SCALAR}],
        "healthEndpoints": {"liveness": SCALAR, "readiness": SCALAR},
        "serviceAccountName": SCALAR,
        "imagePullSecret": SCALAR,
        "deployer": SCALAR,
        "subscriptions": [{"source": SCALAR, "filters": MAP}],
        "managementDisabled": SCALAR,
    },
}


def check_schema(doc: object, schema: Any = SCHEMA, where: str = "") -> None:
    """Raise ProjectError naming the first field ``doc`` has that ``schema`` does not know,
    or the first value of the wrong shape."""
    label = where or "the document"
    if isinstance(schema, dict):
        if doc is None:
            return
        if not isinstance(doc, dict):
            raise ProjectError(f"{label}: expected a mapping, got {_shape(doc)}")
        for key, value in doc.items():
            path = f"{where}.{key}" if where else str(key)
            if key not in schema:
                known = ", ".join(schema)
                parent = f"in {where}" if where else "at the top level"
                raise ProjectError(
                    f"unknown field {path!r} (fields known {parent}: {known})"
                )
            check_schema(value, schema[key], path)
    elif isinstance(schema, list):
        if doc is None:
            return
        if not isinstance(doc, list):
            raise ProjectError(f"{label}: expected a list, got {_shape(doc)}")
        for i, item in enumerate(doc):
            check_schema(item, schema[0], f"{where}[{i}]")
    elif schema is MAP:
        if doc is not None and not isinstance(doc, dict):
            raise ProjectError(f"{label}: expected a mapping, got {_shape(doc)}")
    elif schema is SCALARS:
        if doc is not None and not isinstance(doc, list):
            raise ProjectError(f"{label}: expected a list, got {_shape(doc)}")
    elif isinstance(doc, (dict, list)):
        raise ProjectError(f"{label}: expected a single value, got {_shape(doc)}")


def _shape(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


# -- the project ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Env:
    """One ``run.envs`` entry; ``name`` None is a whole-secret/ConfigMap import."""

    name: str | None
    value: str | None


@dataclass(frozen=True, slots=True)
class FunctionProject:
    """A function's directory and its func.yaml, checked. ``doc`` is the whole file as read,
    for the fields this class does not lift out (deploy writes them back unchanged)."""

    root: Path
    name: str
    runtime: str
    invoke: Invoke
    envs: tuple[Env, ...] = ()
    doc: dict[str, Any] = field(default_factory=dict)
    start_timeout_s: float | None = None  # run.startTimeout, when given

    @property
    def func_yaml(self) -> Path:
        return self.root / FUNC_YAML

    @property
    def run_dir(self) -> Path:
        return self.root / RUN_DATA_DIR

    def section(self, *path: str) -> dict[str, Any]:
        """The mapping at ``path`` (e.g. ``section("deploy", "options", "scale")``), or {}."""
        node: Any = self.doc
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return node if isinstance(node, dict) else {}


def find_root(start: Path) -> Path:
    """The function directory at ``start``: the directory holding ``func.yaml``.

    Raises:
        ProjectError: no func.yaml there (the message says how to make one).
    """
    start = start.resolve()
    if (start / FUNC_YAML).is_file():
        return start
    raise ProjectError(
        f"{start} is not a function directory (no {FUNC_YAML}). Run the command inside the "
        "function's directory, pass --path DIR, or create one with "
        "`knpy func create -l python NAME`."
    )


def load(start: Path) -> FunctionProject:
    """Read and check the function at ``start`` (see ``find_root``).

    Raises:
        ProjectError: no func.yaml, YAML that does not parse, an unknown field (named), or a
            value Knative would refuse (the name, ``invoke``, an env name).
    """
    root = find_root(start)
    path = root / FUNC_YAML
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ProjectError(f"{path}: not valid YAML: {err}") from None
    if doc is None:
        doc = {}
    try:
        check_schema(doc)
    except ProjectError as err:
        raise ProjectError(f"{path}: {err}") from None
    return _project(root, doc, path)


def _project(root: Path, doc: dict[str, Any], path: Path) -> FunctionProject:
    name = str(doc.get("name") or root.name)
    if not _NAME.match(name):
        raise ProjectError(
            f"{path}: name {name!r} is not a valid function name (lower-case letters, digits "
            "and '-', starting and ending with a letter or digit)"
        )
    invoke = doc.get("invoke") or "http"
    if invoke not in INVOKE_FORMATS:
        raise ProjectError(f"{path}: invoke {invoke!r}: must be one of http, cloudevent")
    runtime = str(doc.get("runtime") or "python")
    envs: list[Env] = []
    for i, item in enumerate((doc.get("run") or {}).get("envs") or []):
        env_name = item.get("name") if item else None
        value = item.get("value") if item else None
        if env_name is not None and not _ENV_NAME.match(str(env_name)):
            raise ProjectError(f"{path}: run.envs[{i}].name {env_name!r} is not a valid name")
        envs.append(
            Env(
                None if env_name is None else str(env_name),
                None if value is None else _scalar_text(value),
            )
        )
    start = (doc.get("run") or {}).get("startTimeout")
    start_s = None if start is None else duration_s(start, f"{path}: run.startTimeout")
    return FunctionProject(root, name, runtime, invoke, tuple(envs), doc, start_s)


def duration_s(value: object, what: str) -> float:
    """A positive Go duration (``60s``, ``2m``) in seconds: ``run.startTimeout``, as Knative's
    RunSpec.StartTimeout (a time.Duration) reads from YAML, and ``--start-timeout``. A bare
    number is refused: Go would take 60 as 60 nanoseconds.

    Raises:
        ProjectError: anything else, named by ``what``.
    """
    from shared.gosyntax import parse_seconds

    try:
        seconds = parse_seconds(value) if isinstance(value, str) else -1.0
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise ProjectError(f"{what} {value!r}: want a positive duration such as 60s or 2m")
    return seconds


def _scalar_text(value: object) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def resolve_envs(envs: tuple[Env, ...], environ: Mapping[str, str]) -> dict[str, str]:
    """``run.envs`` as the variables ``knpy func run`` sets, ``{{ env:NAME }}`` taken from
    ``environ`` (Knative's func run does the same, pkg/functions/function_envs.go).

    Raises:
        ProjectError: a referenced variable is unset, or a secret/ConfigMap reference (which
            only a cluster or ``knpy serve`` can resolve).
    """
    out: dict[str, str] = {}
    for env in envs:
        value = env.value or ""
        match = _TEMPLATE.match(value.strip())
        if match is None:
            if env.name is None:
                raise ProjectError(f"run.envs: an entry without a name has value {value!r}")
            out[env.name] = value
            continue
        kind, ref = match.group(1), match.group(2).strip()
        if kind == "env":
            if ref not in environ:
                raise ProjectError(
                    f"run.envs: {env.name or '(import)'} refers to {{{{ env:{ref} }}}}, and "
                    f"{ref} is not set in this shell; export it or change func.yaml"
                )
            if env.name is None:
                raise ProjectError(f"run.envs: {{{{ env:{ref} }}}} needs a name")
            out[env.name] = environ[ref]
        elif kind in ("secret", "configMap"):
            raise ProjectError(
                f"run.envs: {env.name or '(import)'} = {value!r}: a {kind} exists only where "
                "the function is deployed; `knpy func run` cannot read it (give a plain value "
                "or {{ env:NAME }} for local runs)"
            )
        else:
            raise ProjectError(f"run.envs: unknown reference {value!r} (env, secret, configMap)")
    return out


def write(root: Path, doc: Mapping[str, Any]) -> Path:
    """Write ``doc`` as ``root/func.yaml`` (checked first, keys in the given order)."""
    check_schema(dict(doc))
    path = root / FUNC_YAML
    path.write_text(yaml.safe_dump(dict(doc), sort_keys=False), encoding="utf-8")
    return path


def new_doc(name: str, invoke: Invoke, *, now: dt.datetime) -> dict[str, Any]:
    """The func.yaml Knative's ``func create -l python`` writes (``invoke`` only when not the
    default http, as the template manifest sets it)."""
    doc: dict[str, Any] = {
        "specVersion": SPEC_VERSION,
        "name": name,
        "runtime": "python",
        "created": now,  # a YAML timestamp, as Go writes time.Time
    }
    if invoke != "http":
        doc["invoke"] = invoke
    return doc


def source_files(root: Path) -> Iterator[os.DirEntry[str]]:
    """The function's own files under ``root``: those a change to reloads (``run``) or
    redeploys (functions/deploy.py ``source_digest``); not .func, virtualenvs, caches."""
    stack = [str(root)]
    while stack:
        top = stack.pop()
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in _SKIP_DIRS and not entry.name.endswith(".egg-info"):
                    stack.append(entry.path)
            elif os.path.splitext(entry.name)[1] in _WATCHED_SUFFIXES:
                yield entry


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))
