#!/usr/bin/env python3
"""Checks that every environments/*.tfvars of a Terraform root sets only declared variables,
each with a value of the declared type, and that the MSK broker count fits the zones.

Usage: check-tfvars.py TERRAFORM_DIR [TFVARS ...]   (default: TERRAFORM_DIR/environments/*.tfvars)
Runs with the HCL parser that checkov brings (scripts/deploy-tools). Exit status 1 on a problem.
"""

import glob
import os
import re
import sys

from terraform_hcl import module_files, parse, unwrap, variables as declared_variables


def conforms(value, kind):
    """Whether a tfvars value has the type written as `kind` (the types this project uses)."""
    if kind == "any":
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    collection = re.fullmatch(r"(list|set|map)\((.*)\)", kind)
    if collection:
        outer, inner = collection.groups()
        if outer == "map":
            return isinstance(value, dict) and all(conforms(v, inner) for v in value.values())
        return isinstance(value, list) and all(conforms(v, inner) for v in value)
    raise SystemExit(f"check-tfvars.py does not know the type {kind}; teach it")


def check(path, variables):
    problems = []
    values = {name: unwrap(value) for name, value in parse(path).items()}
    for name, value in values.items():
        if name not in variables:
            problems.append(f"{name} is not a declared variable")
        elif not conforms(value, variables[name][0]):
            problems.append(f"{name} = {value!r} is not a {variables[name][0]}")
    merged = {name: default for name, (_, default, _) in variables.items()}
    merged.update(values)
    zones, brokers = merged.get("availability_zone_count"), merged.get("kafka_broker_count")
    if isinstance(zones, int) and isinstance(brokers, int) and brokers % zones:
        problems.append(f"kafka_broker_count {brokers} is not a multiple of availability_zone_count {zones}")
    required = [name for name, (_, _, has_default) in variables.items()
                if not has_default and name not in values]
    problems += [f"{name} has no default and is not set" for name in required]
    return problems


def main():
    root = sys.argv[1]
    files = sys.argv[2:] or sorted(glob.glob(os.path.join(root, "environments", "*.tfvars")))
    if not files:
        raise SystemExit(f"no tfvars files under {root}/environments")
    variables = declared_variables(module_files(root))
    failed = False
    for path in files:
        problems = check(path, variables)
        for problem in problems:
            print(f"{path}: {problem}", file=sys.stderr)
        print(f"  {path}: {len(problems)} problem(s)", file=sys.stderr)
        failed |= bool(problems)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
