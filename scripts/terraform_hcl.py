"""Reading Terraform with the HCL parser that checkov brings (scripts/deploy-tools); shared by
check-tf-schema.py and check-tfvars.py."""

import glob
import os
import re

import hcl2


def parse(path):
    with open(path) as handle:
        return hcl2.load(handle)


def unwrap(value):
    """checkov's HCL parser wraps every attribute's value in a one-element list."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def module_files(path):
    """Every *.tf file of a module, parsed, by file name."""
    return {file: parse(file) for file in sorted(glob.glob(os.path.join(path, "*.tf")))}


def variables(files):
    """Variable name -> (type expression, default or None, whether it has a default)."""
    found = {}
    for parsed in files.values():
        for block in parsed.get("variable", []):
            for name, body in block.items():
                kind = str(unwrap(body.get("type", "any")))
                kind = re.sub(r"^\$\{(.*)\}$", r"\1", kind).replace(" ", "")
                has_default = "default" in body
                found[name] = (kind, unwrap(body["default"]) if has_default else None, has_default)
    return found
