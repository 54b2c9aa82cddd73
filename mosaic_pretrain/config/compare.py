"""Which dotted keys differ between two nested records (a checkpoint's recipe and the current
one, a finished job's settings and the planned ones), for messages that name them."""


def flatten(data, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; an empty mapping stays a value of its own key."""
    if isinstance(data, dict):
        flat = {}
        for key, value in data.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): data}


def differing_keys(old: dict, new: dict) -> list[str]:
    """The sorted dotted keys whose values differ, or that only one side has."""
    old, new = flatten(old), flatten(new)
    return sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))
