data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_root = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"
}

# The account administers the key through IAM; CloudWatch Logs and the named service-linked
# roles may use it, for this account only.
data "aws_iam_policy_document" "key" {
  # checkov:skip=CKV_AWS_356:in a key policy, Resource "*" means this key and nothing else
  # checkov:skip=CKV_AWS_109:a key policy must let the account administer the key, or the key is unmanageable
  # checkov:skip=CKV_AWS_111:same: the account root statement is the documented default key policy
  statement {
    sid       = "AccountAdministersThroughIam"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = [local.account_root]
    }
  }

  # CloudWatch Logs in this region, for log groups of this account only: the condition AWS
  # documents for a key that encrypts log groups ("Encrypt log data in CloudWatch Logs using
  # AWS KMS").
  dynamic "statement" {
    for_each = var.cloudwatch_logs_region == null ? [] : [var.cloudwatch_logs_region]

    content {
      sid = "CloudWatchLogsUseTheKey"
      actions = [
        "kms:Encrypt*",
        "kms:Decrypt*",
        "kms:ReEncrypt*",
        "kms:GenerateDataKey*",
        "kms:Describe*",
      ]
      resources = ["*"]

      principals {
        type        = "Service"
        identifiers = ["logs.${statement.value}.amazonaws.com"]
      }

      condition {
        test     = "ArnLike"
        variable = "kms:EncryptionContext:aws:logs:arn"
        values   = ["arn:${data.aws_partition.current.partition}:logs:${statement.value}:${data.aws_caller_identity.current.account_id}:log-group:*"]
      }
    }
  }

  # Service-linked roles that use the key on the account's behalf, such as EC2 Auto Scaling
  # launching nodes with encrypted volumes: the two statements of "Required AWS KMS key policy
  # for use with encrypted volumes" (EC2 Auto Scaling user guide).
  dynamic "statement" {
    for_each = length(var.service_linked_role_arns) > 0 ? [1] : []

    content {
      sid = "ServiceLinkedRolesUseTheKey"
      actions = [
        "kms:Encrypt",
        "kms:Decrypt",
        "kms:ReEncrypt*",
        "kms:GenerateDataKey*",
        "kms:DescribeKey",
      ]
      resources = ["*"]

      principals {
        type        = "AWS"
        identifiers = var.service_linked_role_arns
      }
    }
  }

  dynamic "statement" {
    for_each = length(var.service_linked_role_arns) > 0 ? [1] : []

    content {
      sid       = "ServiceLinkedRolesAttachPersistentResources"
      actions   = ["kms:CreateGrant"]
      resources = ["*"]

      principals {
        type        = "AWS"
        identifiers = var.service_linked_role_arns
      }

      condition {
        test     = "Bool"
        variable = "kms:GrantIsForAWSResource"
        values   = ["true"]
      }
    }
  }
}

resource "aws_kms_key" "this" {
  description             = var.description
  enable_key_rotation     = true
  rotation_period_in_days = 365
  deletion_window_in_days = var.deletion_window_in_days
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}
