# logs-key: CloudWatch Logs may use the key on a source-account condition only.
data "aws_iam_policy_document" "key" {
  statement {
    actions   = ["kms:Encrypt*", "kms:Decrypt*"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.eu-west-1.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = ["111122223333"]
    }
  }
}

resource "aws_kms_key" "this" {
  policy = data.aws_iam_policy_document.key.json
}

output "key_arn" {
  value = aws_kms_key.this.arn
}
