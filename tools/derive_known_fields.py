#!/usr/bin/env python3
"""Derives sim/src/machineconfig/known_fields.txt from the Talos machine-config JSON schemas.

Usage (schemas oldest first; the simulator reads bit 0 = v1.11, bit 1 = v1.13, bit 2 = newest):
  tools/derive_known_fields.py config.schema.v1.11.json config.schema.v1.13.json \
      config.schema.json > sim/src/machineconfig/known_fields.txt

Each output line is `<kind> <path> <scalar type or -> <schema mask>` (bit i set = known to the
i-th schema argument), in schema (= Go struct field) order, first schema first. `v1alpha1` is
the legacy document. Paths use `.` between keys, `[]` for list items, `{}` for keys of a typed
map, and end in `*` below which anything is accepted (free-form objects such as extraArgs or
embedded Kubernetes manifests).
"""
import json
import sys

out = []
seen_lines = set()
# Which schema files (bit i = i-th argument) know each entry.
masks = {}
current_bit = 1


def add(entry):
    masks[entry] = masks.get(entry, 0) | current_bit
    if entry not in seen_lines:
        seen_lines.add(entry)
        out.append(entry)


types = {}

# Kinds whose schema `kind` enum (taken from a `schemaMeta` comment) is not the kind the config
# registry knows; the registered kind is what Talos decodes (upstream @v1.14.0-rc.1:
# types/runtime/unattended_install.go `UnattendedInstallConfigKind`,
# types/network/kubespan_endpoints.go `KubespanEndpointsKind`).
KIND_FIXUPS = {
    "UnattendedInstall": "UnattendedInstallConfig",
    "KubeSpanEndpoints": "KubeSpanEndpointsConfig",
}


def scalar_type(defs, node):
    """The JSON type of a scalar field (string/integer/boolean/number), else None."""
    while isinstance(node, dict) and "$ref" in node:
        node = defs[node["$ref"].split("/")[-1]]
    if not isinstance(node, dict):
        return None
    typ = node.get("type")
    if typ in ("string", "integer", "boolean", "number"):
        return typ
    if "enum" in node and all(isinstance(v, str) for v in node["enum"]):
        return "string"
    return None


def walk(defs, node, kind, path, seen):
    if not isinstance(node, dict):
        return
    if "$ref" in node:
        name = node["$ref"].split("/")[-1]
        if (name, path) in seen:
            return
        walk(defs, defs[name], kind, path, seen | {(name, path)})
        return
    for key in ("oneOf", "anyOf", "allOf"):
        for branch in node.get(key, []):
            walk(defs, branch, kind, path, seen)
    typ = node.get("type")
    props = node.get("properties")
    if props:
        for name, sub in props.items():
            child = f"{path}.{name}" if path else name
            add((kind, child))
            scalar = scalar_type(defs, sub)
            if scalar:
                types.setdefault((kind, child), set()).add(scalar)
            walk(defs, sub, kind, child, seen)
    addl = node.get("additionalProperties")
    pattern = node.get("patternProperties")
    if isinstance(addl, dict) and scalar_type(defs, addl):
        types.setdefault((kind, f"{path}.{{}}"), set()).add(scalar_type(defs, addl))
    if isinstance(addl, dict) and (addl.get("properties") or "$ref" in addl):
        add((kind, f"{path}.{{}}"))
        walk(defs, addl, kind, f"{path}.{{}}", seen)
    elif pattern:
        for sub in pattern.values():
            add((kind, f"{path}.{{}}"))
            walk(defs, sub, kind, f"{path}.{{}}", seen)
    elif (typ == "object" or typ is None) and not props and "items" not in node and path:
        if typ == "object" or addl not in (None, False):
            add((kind, f"{path}.*"))
    if typ == "array" or "items" in node:
        items = node.get("items")
        if isinstance(items, dict):
            add((kind, f"{path}[]"))
            if scalar_type(defs, items):
                types.setdefault((kind, f"{path}[]"), set()).add(scalar_type(defs, items))
            walk(defs, items, kind, f"{path}[]", seen)


for index, schema_path in enumerate(sys.argv[1:]):
    current_bit = 1 << index
    schema = json.load(open(schema_path))
    defs = schema["$defs"]
    for ref in schema["oneOf"]:
        name = ref["$ref"].split("/")[-1]
        doc = defs[name]
        kind_enum = doc.get("properties", {}).get("kind", {}).get("enum")
        kind = kind_enum[0] if kind_enum else "v1alpha1"
        kind = KIND_FIXUPS.get(kind, kind)
        add((kind, ""))
        walk(defs, doc, kind, "", set())

# `persist` is in no schema but every loader accepts it.
current_bit = (1 << (len(sys.argv) - 1)) - 1
add(("v1alpha1", "persist"))
for kind, path in out:
    found = types.get((kind, path), set())
    # Only fields with one unambiguous scalar type across all schemas get a type.
    scalar = next(iter(found)) if len(found) == 1 else "-"
    print(f"{kind} {path or '.'} {scalar} {masks[(kind, path)]}")
