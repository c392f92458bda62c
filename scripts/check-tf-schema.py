#!/usr/bin/env python3
"""Checks Terraform against the AWS provider's schema, where `terraform validate` cannot run.

`terraform validate` needs the provider binary from the Terraform registry, which the build
machines cannot reach. The provider's schema also ships, generated, in the npm package
@cdktf/provider-aws (its .jsii type manifest names every resource, data source, argument and
block, and says which are required). This script checks, in every module under a root:

  - each aws_* resource and data source type exists;
  - each argument and nested block exists (dynamic blocks included), required ones are set;
  - each reference aws_x.name.attribute / data.aws_x.name.attribute names a real attribute;
  - each local module call passes only declared variables and every required one;
  - each module.name.output reference names an output of that module;
  - each var.x and local.x reference is declared in its module.

Usage: check-tf-schema.py build JSII OUT      compact the package's .jsii manifest into OUT (once)
       check-tf-schema.py check SCHEMA ROOT   check ROOT and the local modules it calls
Runs with the HCL parser that checkov brings (scripts/deploy-tools). Exit status 1 on a problem.
"""

import glob
import json
import os
import re
import sys

from terraform_hcl import module_files, unwrap, variables

PACKAGE = "@cdktf/provider-aws."
META = {"count", "for_each", "depends_on", "lifecycle", "provider", "provisioner", "connection"}
HCL_KEYS = {"__start_line__", "__end_line__"}


def camel(name):
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def snake(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# --- build ----------------------------------------------------------------------------------


def struct_ref(kind, types):
    """The provider struct a property's type refers to (a nested block), or None."""
    if "fqn" in kind:
        fqn = kind["fqn"]
        if fqn.startswith(PACKAGE) and types.get(fqn, {}).get("datatype"):
            return fqn
        return None
    if "collection" in kind:
        return struct_ref(kind["collection"]["elementtype"], types)
    if "union" in kind:
        for option in kind["union"]["types"]:
            found = struct_ref(option, types)
            if found:
                return found
    return None


def build(jsii_path, out_path):
    types = json.load(open(jsii_path))["types"]
    structs = {}

    def struct(fqn):
        if fqn in structs:
            return
        structs[fqn] = {}
        fields = {}
        for prop in types[fqn].get("properties", []):
            block = struct_ref(prop["type"], types)
            fields[snake(prop["name"])] = {
                "required": not prop.get("optional", False),
                "block": block,
            }
            if block:
                struct(block)
        structs[fqn] = fields

    kinds = {}
    for fqn, kind in types.items():
        if not fqn.startswith(PACKAGE) or kind.get("kind") != "class":
            continue
        base = kind.get("base")
        if base not in ("cdktf.TerraformResource", "cdktf.TerraformDataSource"):
            continue
        namespace = fqn[len(PACKAGE):].split(".")[0]
        config = f"{PACKAGE}{namespace}.{fqn.rsplit('.', 1)[1]}Config"
        if config not in types:
            continue
        struct(config)
        attributes = sorted({snake(p["name"]) for p in kind.get("properties", [])
                             if not p["name"].endswith("Input")} | set(structs[config]))
        data = base == "cdktf.TerraformDataSource"
        name = snake(namespace)
        name = "data." + name[len("data_"):] if data else "aws_" + name
        kinds[name] = {"config": config, "attributes": attributes}
    readme = open(os.path.join(os.path.dirname(jsii_path), "README.md")).read()
    version = re.search(r"hashicorp/aws provider version ([0-9.]+)", readme).group(1)
    schema = {"version": version, "kinds": kinds, "structs": structs}
    with open(out_path, "w") as out:
        json.dump(schema, out)
    print(f"  {len(kinds)} resource and data source types", file=sys.stderr)


# --- check ----------------------------------------------------------------------------------


def blocks(value):
    """A nested block's occurrences: the parser gives a list of dicts."""
    value = value if isinstance(value, list) else [value]
    return [item for item in value if isinstance(item, dict)]


class Module:
    def __init__(self, path):
        self.path = path
        self.files = module_files(path)
        # name -> whether it has a default
        self.variables = {name: has_default for name, (_, _, has_default) in variables(self.files).items()}
        self.outputs = set()
        self.locals = set()
        for parsed in self.files.values():
            for block in parsed.get("output", []):
                self.outputs.update(block)
            for block in parsed.get("locals", []):
                self.locals.update(key for key in block if key not in HCL_KEYS)


def check_body(body, struct, schema, where, problems):
    fields = schema["structs"][struct]
    for key, value in body.items():
        if key in HCL_KEYS or key in META:
            continue
        if key == "dynamic":
            for dynamic in blocks(value):
                for name, spec in dynamic.items():
                    if name in HCL_KEYS:
                        continue
                    field = fields.get(name)
                    if not field or not field["block"]:
                        problems.append(f"{where}: no block {name}")
                        continue
                    for content in blocks(unwrap(spec).get("content", [])):
                        check_body(content, field["block"], schema, f"{where}.{name}", problems)
            continue
        field = fields.get(key)
        if field is None:
            problems.append(f"{where}: no argument or block {key}")
        elif field["block"]:
            for item in blocks(value):
                check_body(item, field["block"], schema, f"{where}.{key}", problems)
    dynamic_names = set()
    for dynamic in blocks(body.get("dynamic", [])):
        dynamic_names.update(dynamic)
    for name, field in fields.items():
        if field["required"] and name not in body and name not in dynamic_names:
            problems.append(f"{where}: required {name} is not set")


def expressions(value):
    """Every string inside a parsed value (expressions are kept as ${...} strings)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from expressions(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from expressions(item)


def check_module(module, schema, modules, problems):
    kinds = schema["kinds"]
    declared = {}
    for file, parsed in module.files.items():
        where = os.path.relpath(file)
        for section, prefix in (("resource", ""), ("data", "data.")):
            for block in parsed.get(section, []):
                for kind, instances in block.items():
                    for name, body in instances.items():
                        declared[f"{prefix}{kind}.{name}"] = kind
                        if not kind.startswith("aws_"):
                            continue
                        if prefix + kind not in kinds:
                            problems.append(f"{where}: no {section} type {kind}")
                            continue
                        config = kinds[prefix + kind]["config"]
                        check_body(body, config, schema, f"{where}: {prefix}{kind}.{name}", problems)
        for block in parsed.get("module", []):
            for name, body in block.items():
                source = unwrap(body.get("source"))
                if not isinstance(source, str) or not source.startswith(("./", "../")):
                    continue
                target = modules[os.path.normpath(os.path.join(module.path, source))]
                given = {key for key in body if key not in HCL_KEYS | META | {"source", "version"}}
                for extra in sorted(given - set(target.variables)):
                    problems.append(f"{where}: module {name} has no variable {extra}")
                for missing in sorted(v for v, has_default in target.variables.items()
                                      if not has_default and v not in given):
                    problems.append(f"{where}: module {name} needs {missing}")
    calls = {}
    for parsed in module.files.values():
        for block in parsed.get("module", []):
            for name, body in block.items():
                source = unwrap(body.get("source"))
                if isinstance(source, str) and source.startswith(("./", "../")):
                    calls[name] = modules[os.path.normpath(os.path.join(module.path, source))]
    reference = re.compile(r"\b(data\.)?(aws_[a-z0-9_]+)\.([a-z0-9_-]+)(?:\[[^\]]*\])?\.([a-z0-9_]+)")
    for file, parsed in module.files.items():
        where = os.path.relpath(file)
        for text in expressions(parsed):
            for data, kind, name, attribute in reference.findall(text):
                key = f"{data}{kind}"
                if f"{key}.{name}" in declared and key in kinds and attribute not in kinds[key]["attributes"]:
                    problems.append(f"{where}: {key}.{name} has no attribute {attribute}")
            for name, output in re.findall(r"\bmodule\.([a-z0-9_]+)\.([a-z0-9_]+)", text):
                if name in calls and output not in calls[name].outputs:
                    problems.append(f"{where}: module {name} has no output {output}")
            for name in re.findall(r"\bvar\.([a-z0-9_]+)", text):
                if name not in module.variables:
                    problems.append(f"{where}: var.{name} is not declared")
            for name in re.findall(r"\blocal\.([a-z0-9_]+)", text):
                if name not in module.locals:
                    problems.append(f"{where}: local.{name} is not defined")


def check(schema_path, root):
    schema = json.load(open(schema_path))
    paths = [root] + sorted(os.path.dirname(p) for p in glob.glob(os.path.join(root, "modules", "*", "main.tf")))
    modules = {os.path.normpath(path): Module(path) for path in paths}
    problems = []
    for module in modules.values():
        check_module(module, schema, modules, problems)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"  {len(modules)} modules against hashicorp/aws {schema['version']} (from @cdktf/provider-aws): "
          f"{len(problems)} problem(s)", file=sys.stderr)
    return not problems


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("build", "check"):
        sys.exit(__doc__)
    if sys.argv[1] == "build":
        build(sys.argv[2], sys.argv[3])
    else:
        sys.exit(0 if check(sys.argv[2], sys.argv[3]) else 1)
