variable "ebs_kms_key_arn" {
  type = string
}

variable "support_type" {
  type = string
}

resource "aws_eks_cluster" "this" {
  name = "wrong"

  upgrade_policy {
    support_type = var.support_type
  }
}

# network-policy: the VPC CNI runs with its defaults (no enforcement).
resource "aws_eks_addon" "this" {
  for_each     = toset(["vpc-cni", "coredns"])
  cluster_name = aws_eks_cluster.this.name
  addon_name   = each.value
}
