"""Kubernetes objects from YAML or JSON text, read as the API server would keep them.

One reading for every place knpy takes a manifest (the knpy commands, the API server's YAML
bodies, the Knative resource model): YAML 1.1 without its timestamp type, so a date stays the
string JSON would carry, and multi-document text flattened the way kubectl does (a ``kind:
List`` or a top-level array contributes its items; empty documents are skipped).
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["JsonYamlLoader", "load_documents"]


class JsonYamlLoader(yaml.SafeLoader):
    """SafeLoader without the timestamp resolver: a YAML date stays the string JSON has."""


JsonYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_documents(text: str) -> list[Any]:
    """Every document of the text, in order, ``kind: List`` and arrays flattened.

    Items are returned as they are (not checked to be objects): callers report what they
    cannot use with their own vocabulary.

    Raises:
        yaml.YAMLError: the text is neither YAML nor JSON.
    """
    documents: list[Any] = []
    for doc in yaml.load_all(text, Loader=JsonYamlLoader):
        if isinstance(doc, dict) and doc.get("kind") == "List":
            items = doc.get("items")
            documents.extend(items if isinstance(items, list) else [])
        elif isinstance(doc, list):
            documents.extend(doc)
        elif doc is not None:
            documents.append(doc)
    return documents
