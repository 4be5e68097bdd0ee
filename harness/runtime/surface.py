"""The migration API surface of one QEMU binary, read from its own QMP schema.

`query-qmp-schema` masks type names, so capabilities and parameters are found
by walking from the commands that take them (migrate-set-capabilities,
migrate-set-parameters). Nothing here is a hand-written list of QEMU features.
"""
from __future__ import annotations

from dataclasses import dataclass

INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Param:
    name: str
    kind: str                 # int, bool, number, str, str-or-null, enum, array, other
    values: tuple = ()        # enum members


@dataclass(frozen=True)
class Surface:
    commands: frozenset
    capabilities: tuple
    parameters: tuple         # Param
    events: frozenset = frozenset()

    def has(self, command: str) -> bool:
        return command in self.commands

    def param(self, name: str):
        return next((p for p in self.parameters if p.name == name), None)

    def to_dict(self) -> dict:
        return {"commands": sorted(self.commands), "capabilities": list(self.capabilities),
                "parameters": [[p.name, p.kind, list(p.values)] for p in self.parameters],
                "events": sorted(self.events)}

    @classmethod
    def from_dict(cls, d: dict) -> "Surface":
        return cls(frozenset(d["commands"]), tuple(d["capabilities"]),
                   tuple(Param(n, k, tuple(v)) for n, k, v in d["parameters"]),
                   frozenset(d.get("events", ())))


class SchemaError(ValueError):
    pass


def from_schema(schema: list) -> Surface:
    """Surface from the reply of query-qmp-schema."""
    by = {e["name"]: e for e in schema}
    commands = frozenset(e["name"] for e in schema if e.get("meta-type") == "command")
    events = frozenset(e["name"] for e in schema if e.get("meta-type") == "event")

    def members(cmd: str) -> list:
        c = by.get(cmd)
        if c is None or c.get("meta-type") != "command":
            return []
        return by.get(c.get("arg-type"), {}).get("members", [])

    caps: tuple = ()
    for m in members("migrate-set-capabilities"):
        if m["name"] != "capabilities":
            continue
        elem = by.get(by.get(m["type"], {}).get("element-type"), {})
        for f in elem.get("members", []):
            if f["name"] == "capability":
                caps = tuple(by.get(f["type"], {}).get("values", ()))
    params = tuple(_param(m, by) for m in members("migrate-set-parameters"))
    if "migrate-set-capabilities" in commands and not caps:
        raise SchemaError("migrate-set-capabilities takes no capability enum in this schema")
    return Surface(commands, caps, params, events)


def _param(member: dict, by: dict) -> Param:
    t = member["type"]
    if t in ("int", "bool", "number", "str"):
        return Param(member["name"], t)
    e = by.get(t, {})
    meta = e.get("meta-type")
    if meta == "builtin":
        kind = e.get("json-type", "other")
        return Param(member["name"], {"integer": "int", "boolean": "bool", "string": "str"}.get(kind, kind))
    if meta == "enum":
        return Param(member["name"], "enum", tuple(e.get("values", ())))
    if meta == "alternate":
        types = {by.get(x["type"], {}).get("json-type", x["type"]) for x in e.get("members", [])}
        if types <= {"str", "string", "null"}:
            return Param(member["name"], "str-or-null")
    if meta == "array":
        return Param(member["name"], "array")
    return Param(member["name"], "other")


# Values drawn for a parameter: valid ones, the edges, and ones QEMU must refuse cleanly.
INT_VALUES = (0, 1, 2, 3, 8, 64, 100, 255, 256, 1000, 4096, 65536, 1 << 20, 3_000_000,
              1 << 30, 2**31 - 1, 2**31, 2**32, 2**53, INT64_MAX, -1)
STR_VALUES = ("", "tlscreds0", "no-such-object", "x" * 300)


def draw_value(rng, p: Param):
    r = rng.random()
    if r < 0.05:            # wrong JSON type: the parser's error path
        return rng.choice(["1", 1.5, None, [], {}]) if p.kind != "str-or-null" else 7
    if p.kind == "int":
        return rng.choice(INT_VALUES)
    if p.kind == "number":
        return rng.choice((0.0, 0.5, 1.0, 100.0, 1e9, -1.0))
    if p.kind == "bool":
        return rng.random() < 0.5
    if p.kind == "enum":
        return rng.choice(list(p.values) + ["no-such-value"])
    if p.kind in ("str", "str-or-null"):
        return rng.choice(STR_VALUES + ((None,) if p.kind == "str-or-null" else ()))
    if p.kind == "array":
        return []
    return None
