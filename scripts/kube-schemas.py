#!/usr/bin/env python3
"""Writes kubeconform's offline schemas from a live API server's OpenAPI v2 document.

Usage: kubectl get --raw /openapi/v2 | scripts/kube-schemas.py OUT_DIR

One standalone, strict JSON schema per kind (references inlined, no unknown fields), named
OUT_DIR/<group>/<kind>_<version>.json in lower case (the group of core kinds is v1), for
kubeconform -schema-location 'OUT_DIR/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json'.
The server is the one the tests run, so the schemas match its version and the CRDs applied to it.
"""

import json
import os
import sys

INT_OR_STRING = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
# Types whose JSON form is not what their OpenAPI v2 definition says.
SPECIAL = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": INT_OR_STRING,
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"oneOf": [{"type": "string"}, {"type": "number"}]},
}


def inline(node, definitions, seen):
    """The schema with every $ref replaced by its definition; a cycle ends in an open schema."""
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name in SPECIAL:
            return SPECIAL[name]
        if name in seen:
            return {}
        return inline(definitions[name], definitions, seen | {name})
    if node.get("format") == "int-or-string" or node.get("x-kubernetes-int-or-string"):
        return INT_OR_STRING
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: inline(schema, definitions, seen) for name, schema in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = inline(value, definitions, seen)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [inline(schema, definitions, seen) for schema in value]
        elif not key.startswith("x-kubernetes-"):
            out[key] = value
    open_ended = node.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and "additionalProperties" not in out and not open_ended:
        out["additionalProperties"] = False
    # Fields the server accepts as null.
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def main():
    out_dir = sys.argv[1]
    definitions = json.load(sys.stdin)["definitions"]
    written = 0
    for name, definition in definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            schema = inline(definition, definitions, {name})
            schema["$schema"] = "http://json-schema.org/draft-07/schema#"
            # kubeconform's {{ .Group }} of a core kind (apiVersion v1) is its version.
            group_dir = os.path.join(out_dir, (gvk["group"] or gvk["version"]).lower())
            os.makedirs(group_dir, exist_ok=True)
            path = os.path.join(group_dir, f'{gvk["kind"].lower()}_{gvk["version"].lower()}.json')
            with open(path, "w") as out:
                json.dump(schema, out)
            written += 1
    print(f"  {written} schemas in {out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
