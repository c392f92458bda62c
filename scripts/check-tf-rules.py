#!/usr/bin/env python3
"""Checks Terraform for the AWS mistakes that stopped or surprised a fresh account (issue 21),
each a rule that the provider's schema and checkov cannot see:

  eks-support        every aws_eks_cluster sets upgrade_policy.support_type, and its value (or
                     the default of the variable it names, through module calls) is STANDARD:
                     extended support is on by default and costs about six times as much;
  final-snapshot     an aws_docdb_cluster's skip_final_snapshot does not follow
                     deletion_protection (turning protection off to destroy must not skip it);
  secret-recovery    every aws_secretsmanager_secret takes recovery_window_in_days from a
                     variable (a fixed window reserves the names of a destroyed stack);
  network-policy     the vpc-cni add-on is configured with enableNetworkPolicy;
  ebs-key            a KMS module whose key encrypts node volumes (ebs_kms_key_arn) lets
                     AWSServiceRoleForAutoScaling use it, or EC2 Auto Scaling cannot launch nodes;
  logs-key           a key policy naming CloudWatch Logs conditions on
                     kms:EncryptionContext:aws:logs:arn, as AWS documents;
  lbc-policy         the Load Balancer Controller's policy is a published file of the version
                     the deployment guide installs.

Usage: check-tf-rules.py ROOT GUIDE   (GUIDE: the deployment guide with the helm install)
Runs with the HCL parser that checkov brings (scripts/deploy-tools). Exit status 1 on a problem.
"""

import glob
import os
import re
import sys

from terraform_hcl import module_files, unwrap, variables


def blocks(files, kind):
    """(file, type, name, body) of every `kind` block (resource, module) in parsed files."""
    for file, parsed in files.items():
        for block in parsed.get(kind, []):
            for type_or_name, body in block.items():
                if kind == "module":
                    yield file, None, type_or_name, body
                else:
                    for name, inner in body.items():
                        yield file, type_or_name, name, inner


def text(files):
    return "\n".join(open(file).read() for file in files)


def resolve(value, module_vars, caller_value):
    """A literal, or the value a `var.x` reference gets: from the module call, else the
    variable's default."""
    value = unwrap(value)
    match = re.fullmatch(r"\$\{var\.(\w+)\}", str(value))
    if not match:
        return value
    name = match.group(1)
    if caller_value is not None and name in caller_value:
        return caller_value[name]
    _, default, has_default = module_vars.get(name, (None, None, False))
    return default if has_default else None


def check(root, guide):
    problems = []
    root_files = module_files(root)
    root_vars = variables(root_files)
    calls = {name: body for _, _, name, body in blocks(root_files, "module")}
    modules = {root: (root_files, None)}
    for name, body in calls.items():
        source = unwrap(body.get("source", ""))
        if isinstance(source, str) and source.startswith("./"):
            path = os.path.normpath(os.path.join(root, source))
            passed = {}
            for key, value in body.items():
                value = unwrap(value)
                match = re.fullmatch(r"\$\{var\.(\w+)\}", str(value))
                if match and match.group(1) in root_vars:
                    value = root_vars[match.group(1)][1]
                passed[key] = value
            modules[f"{path}#{name}"] = (module_files(path), passed)

    seen = set()
    for key, (files, passed) in modules.items():
        module_vars = variables(files)
        path = key.split("#")[0]
        first_call = path not in seen
        seen.add(path)
        for file, kind, name, body in blocks(files, "resource"):
            where = f"{file}: {kind}.{name}"
            if kind == "aws_eks_cluster":
                policy = unwrap(body.get("upgrade_policy", [{}]))
                support = resolve(policy.get("support_type"), module_vars, passed) if policy else None
                if support != "STANDARD":
                    problems.append(f"eks-support: {where} has support type {support!r}, not STANDARD")
            if kind == "aws_docdb_cluster":
                skip = str(unwrap(body.get("skip_final_snapshot", "")))
                if "deletion_protection" in skip:
                    problems.append(f"final-snapshot: {where} skips its final snapshot when deletion protection is off")
            if kind == "aws_secretsmanager_secret":
                window = str(unwrap(body.get("recovery_window_in_days", "")))
                if not window.startswith("${var."):
                    problems.append(f"secret-recovery: {where} has a fixed recovery window ({window or 'the default 30'})")
        if not first_call:
            continue
        source = text(files)
        if re.search(r"aws_eks_addon", source) and "vpc-cni" in source and "enableNetworkPolicy" not in source:
            problems.append(f"network-policy: {path}: the vpc-cni add-on does not enable network policy")
        if re.search(r'"logs\.|logs\.\$\{', source) and "aws_kms_key" in source:
            if "kms:EncryptionContext:aws:logs:arn" not in source:
                problems.append(f"logs-key: {path}: CloudWatch Logs may use the key without the documented encryption-context condition")

    for body in calls.values():
        ebs = re.fullmatch(r"\$\{module\.(\w+)\.key_arn\}", str(unwrap(body.get("ebs_kms_key_arn", ""))))
        if ebs:
            key_module = calls.get(ebs.group(1), {})
            roles = str(unwrap(key_module.get("service_linked_role_arns", "")))
            if "AWSServiceRoleForAutoScaling" not in roles:
                problems.append(f"ebs-key: module.{ebs.group(1)} encrypts node volumes but does not let AWSServiceRoleForAutoScaling use it")

    pinned = re.search(r'load_balancer_controller_version\s*=\s*"v([0-9.]+)"', text(glob.glob(os.path.join(root, "*.tf"))))
    installed = re.search(r"eks/aws-load-balancer-controller\b[^\n]*\\?\n?[^\n]*--version\s+([0-9.]+)", open(guide).read())
    if not pinned:
        problems.append("lbc-policy: no load_balancer_controller_version in the root module")
    elif not os.path.exists(os.path.join(root, "policies", f"aws-load-balancer-controller-v{pinned.group(1)}.json")):
        problems.append(f"lbc-policy: policies/aws-load-balancer-controller-v{pinned.group(1)}.json is missing")
    elif not installed or installed.group(1) != pinned.group(1):
        found = installed.group(1) if installed else "no --version"
        problems.append(f"lbc-policy: the guide installs controller chart {found}, the policy is for {pinned.group(1)}")
    return problems


def main():
    root, guide = sys.argv[1], sys.argv[2]
    problems = check(root, guide)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    print(f"{root}: {len(problems)} problem(s)", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
