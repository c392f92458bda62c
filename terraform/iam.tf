# IRSA roles: Kubernetes service accounts assume them through the cluster's OIDC provider.

locals {
  irsa = {
    operator = {
      namespace       = "oms-system"
      service_account = "oms-operator"
    }
    load_balancer_controller = {
      namespace       = "kube-system"
      service_account = "aws-load-balancer-controller"
    }
    cluster_autoscaler = {
      namespace       = "kube-system"
      service_account = "cluster-autoscaler"
    }
  }
}

data "aws_iam_policy_document" "irsa_assume" {
  for_each = local.irsa

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [module.eks.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${module.eks.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${each.value.namespace}:${each.value.service_account}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${module.eks.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "irsa" {
  for_each = local.irsa

  name               = "${local.prefix}-${replace(each.key, "_", "-")}"
  assume_role_policy = data.aws_iam_policy_document.irsa_assume[each.key].json
  tags               = local.tags
}

# The operator: topic administration on this cluster through MSK's IAM listener (when
# kafka IAM auth is on), and reading the brokers' addresses. Nothing else in AWS.
data "aws_iam_policy_document" "operator" {
  statement {
    sid       = "DescribeTheCluster"
    actions   = ["kafka:DescribeClusterV2", "kafka:GetBootstrapBrokers"]
    resources = [module.msk.cluster_arn]
  }

  statement {
    sid = "AdministerOmsTopics"
    actions = [
      "kafka-cluster:Connect",
      "kafka-cluster:DescribeCluster",
      "kafka-cluster:CreateTopic",
      "kafka-cluster:DescribeTopic",
      "kafka-cluster:AlterTopic",
      "kafka-cluster:DeleteTopic",
      "kafka-cluster:DescribeTopicDynamicConfiguration",
      "kafka-cluster:AlterTopicDynamicConfiguration",
    ]
    resources = [
      module.msk.cluster_arn,
      "${replace(module.msk.cluster_arn, ":cluster/", ":topic/")}/*",
    ]
  }
}

resource "aws_iam_role_policy" "operator" {
  name   = "oms-operator"
  role   = aws_iam_role.irsa["operator"].id
  policy = data.aws_iam_policy_document.operator.json
}

# The AWS Load Balancer Controller's policy: docs/install/iam_policy.json of the controller's
# v3.5.0 tag, unchanged (the version docs/deployment-guide.md installs, chart 3.5.0). A new
# controller version brings its own file; scripts/check-deploy keeps the two in step.
locals {
  load_balancer_controller_version = "v3.5.0"
}

resource "aws_iam_role_policy" "load_balancer_controller" {
  name   = "aws-load-balancer-controller"
  role   = aws_iam_role.irsa["load_balancer_controller"].id
  policy = file("${path.module}/policies/aws-load-balancer-controller-${local.load_balancer_controller_version}.json")
}

# The cluster autoscaler (docs/deployment-guide.md installs it): reads the node groups and
# resizes only the Auto Scaling groups EKS tagged as this cluster's (the policy of its AWS
# cloud-provider documentation, scoped by that tag).
data "aws_iam_policy_document" "cluster_autoscaler" {
  # checkov:skip=CKV_AWS_356:describes cannot name resources; resizes are conditioned on the cluster's tag
  statement {
    sid = "Discover"
    actions = [
      "autoscaling:DescribeAutoScalingGroups",
      "autoscaling:DescribeAutoScalingInstances",
      "autoscaling:DescribeLaunchConfigurations",
      "autoscaling:DescribeScalingActivities",
      "autoscaling:DescribeTags",
      "ec2:DescribeImages",
      "ec2:DescribeInstanceTypes",
      "ec2:DescribeLaunchTemplateVersions",
      "ec2:GetInstanceTypesFromInstanceRequirements",
      "eks:DescribeNodegroup",
    ]
    resources = ["*"]
  }

  statement {
    sid = "ResizeThisClustersGroups"
    actions = [
      "autoscaling:SetDesiredCapacity",
      "autoscaling:TerminateInstanceInAutoScalingGroup",
    ]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/k8s.io/cluster-autoscaler/${module.eks.cluster_name}"
      values   = ["owned"]
    }
  }
}

resource "aws_iam_role_policy" "cluster_autoscaler" {
  name   = "cluster-autoscaler"
  role   = aws_iam_role.irsa["cluster_autoscaler"].id
  policy = data.aws_iam_policy_document.cluster_autoscaler.json
}
