"""Registration by name, shared by the plug-in tables (architectures, loss heads): a class that declares its own
`names` is entered under each of them when it is defined."""

from __future__ import annotations


def register_names(table: dict[str, type], cls: type, kind: str) -> None:
    """Enter `cls` under every name it declares itself (not inherited ones); a name taken by another class is an
    error that names both classes."""
    for name in cls.__dict__.get("names", ()):
        other = table.get(name)
        if other is not None and other is not cls:
            raise ValueError(
                f"{kind} name {name!r} of {cls.__module__}.{cls.__qualname__} is already registered by "
                f"{other.__module__}.{other.__qualname__}; give the new {kind} a unique name"
            )
        table[name] = cls
