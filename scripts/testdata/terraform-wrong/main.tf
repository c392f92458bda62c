# Wrong on purpose: scripts/check-deploy proves check-tf-schema.py finds each mistake.
resource "aws_s3_buckett" "typo_in_type" {}

resource "aws_kms_key" "unknown_argument" {
  enable_key_rotaton = true
}

resource "aws_iam_role" "missing_required" {
  name = "no-assume-role-policy"
}

resource "aws_vpc" "bad_block" {
  cidr_block = var.not_declared

  ingress {
    from_port = 1
  }
}

output "bad_attribute" {
  value = aws_vpc.bad_block.cidr
}

module "child" {
  source         = "./modules/child"
  not_a_variable = 1
}

output "missing_output" {
  value = module.child.missing
}

output "undefined_local" {
  value = local.nothing
}
