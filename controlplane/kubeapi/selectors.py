"""Field selectors (apimachinery's fields.ParseSelector): ``a.b=v``, ``a.b==v``, ``a.b!=v``.

Kubernetes supports a few fields per kind (``metadata.name`` and ``metadata.namespace`` for
all, ``status.phase`` and ``spec.nodeName`` for pods...); here any dotted path to a scalar is
accepted, which is a superset. ``kubectl delete --wait`` watches with ``metadata.name=<name>``.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.kube.resources import Obj

__all__ = ["FieldSelector", "FieldSelectorError", "parse_field_selector"]


class FieldSelectorError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class _Term:
    path: tuple[str, ...]
    value: str
    equal: bool

    def matches(self, obj: Obj) -> bool:
        cur: object = obj
        for p in self.path:
            cur = cur.get(p) if isinstance(cur, dict) else None
        if cur is None:
            text = ""
        elif isinstance(cur, bool):
            text = "true" if cur else "false"
        else:
            text = str(cur)
        return (text == self.value) == self.equal


@dataclass(frozen=True, slots=True)
class FieldSelector:
    terms: tuple[_Term, ...] = ()

    def matches(self, obj: Obj) -> bool:
        return all(t.matches(obj) for t in self.terms)

    @property
    def empty(self) -> bool:
        return not self.terms

    def name(self) -> str | None:
        """The name an equality on ``metadata.name`` pins, for a direct lookup."""
        for t in self.terms:
            if t.equal and t.path == ("metadata", "name"):
                return t.value
        return None


def parse_field_selector(text: str | None) -> FieldSelector:
    """Parse a field selector; "" or None selects everything.

    Raises:
        FieldSelectorError: a term has no operator or an empty field.
    """
    if not text or not text.strip():
        return FieldSelector()
    terms: list[_Term] = []
    for raw in text.split(","):
        part = raw.strip()
        for op, equal in (("!=", False), ("==", True), ("=", True)):
            if op in part:
                field, value = part.split(op, 1)
                field = field.strip()
                if not field:
                    raise FieldSelectorError(f"invalid selector: {part!r}: empty field")
                terms.append(_Term(tuple(field.split(".")), value.strip(), equal))
                break
        else:
            raise FieldSelectorError(f"invalid selector: {part!r}; can't understand it")
    return FieldSelector(tuple(terms))
