# A closed set of zones: the stack does not grow into a zone AWS adds later.
data "aws_availability_zones" "available" {
  state = "available"

  filter {
    name   = "zone-name"
    values = [for suffix in var.availability_zone_suffixes : "${var.region}${suffix}"]
  }
}

data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  prefix = "${var.name}-${var.environment}"
  zones  = slice(data.aws_availability_zones.available.names, 0, var.availability_zone_count)
  tags = merge(var.tags, {
    "project"     = "oms"
    "environment" = var.environment
  })
}

# --- KMS: one key per kind of data, so that access and deletion can be separated ----------------

module "kms_logs" {
  source = "./modules/kms"

  name                   = "${local.prefix}-logs"
  description            = "CloudWatch log groups of ${local.prefix}"
  cloudwatch_logs_region = data.aws_region.current.region
  tags                   = local.tags
}

# EC2 Auto Scaling launches the nodes and attaches their encrypted volumes through this role;
# KMS refuses a key policy naming a role that does not exist, so it comes first.
resource "aws_iam_service_linked_role" "autoscaling" {
  count = var.create_autoscaling_service_linked_role ? 1 : 0

  aws_service_name = "autoscaling.amazonaws.com"
  description      = "EC2 Auto Scaling (EKS node groups) for ${local.prefix}"
  tags             = local.tags
}

module "kms_eks" {
  source = "./modules/kms"

  name        = "${local.prefix}-eks"
  description = "Kubernetes Secrets and node volumes of ${local.prefix}"
  service_linked_role_arns = [
    "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling",
  ]
  tags = local.tags

  depends_on = [aws_iam_service_linked_role.autoscaling]
}

module "kms_data" {
  source = "./modules/kms"

  name        = "${local.prefix}-data"
  description = "MSK, ElastiCache, DocumentDB and their Secrets Manager secrets of ${local.prefix}"
  tags        = local.tags
}

# --- network ---------------------------------------------------------------------------------

module "network" {
  source = "./modules/network"

  name                    = local.prefix
  cidr                    = var.vpc_cidr
  availability_zones      = local.zones
  single_nat_gateway      = var.single_nat_gateway
  cluster_name            = local.prefix
  flow_log_retention_days = var.log_retention_days
  logs_kms_key_arn        = module.kms_logs.key_arn
  tags                    = local.tags
}

# --- EKS -------------------------------------------------------------------------------------

module "eks" {
  source = "./modules/eks"

  name                 = local.prefix
  kubernetes_version   = var.eks_version
  support_type         = var.eks_support_type
  vpc_id               = module.network.vpc_id
  subnet_ids           = module.network.private_subnet_ids
  api_allowed_cidrs    = var.eks_api_allowed_cidrs
  admin_principal_arns = var.eks_admin_principal_arns
  secrets_kms_key_arn  = module.kms_eks.key_arn
  ebs_kms_key_arn      = module.kms_eks.key_arn
  logs_kms_key_arn     = module.kms_logs.key_arn
  log_retention_days   = var.log_retention_days
  node_instance_types  = var.eks_node_instance_types
  node_desired_size    = var.eks_node_desired_size
  node_min_size        = var.eks_node_min_size
  node_max_size        = var.eks_node_max_size
  tags                 = local.tags
}

# --- data services, reachable from the cluster's security group only ----------------------------

module "msk" {
  source = "./modules/msk"

  name                      = local.prefix
  kafka_version             = var.kafka_version
  broker_count              = var.kafka_broker_count
  instance_type             = var.kafka_instance_type
  volume_size_gib           = var.kafka_volume_size_gib
  vpc_id                    = module.network.vpc_id
  vpc_cidr                  = module.network.vpc_cidr
  subnet_ids                = module.network.private_subnet_ids
  client_security_group_ids = [module.eks.cluster_security_group_id]
  kms_key_arn               = module.kms_data.key_arn
  logs_kms_key_arn          = module.kms_logs.key_arn
  log_retention_days        = var.log_retention_days
  secret_recovery_days      = var.secret_recovery_window_days
  tags                      = local.tags
}

module "elasticache" {
  source = "./modules/elasticache"

  name                      = local.prefix
  node_type                 = var.redis_node_type
  replicas                  = var.redis_replicas
  vpc_id                    = module.network.vpc_id
  vpc_cidr                  = module.network.vpc_cidr
  subnet_ids                = module.network.private_subnet_ids
  client_security_group_ids = [module.eks.cluster_security_group_id]
  kms_key_arn               = module.kms_data.key_arn
  logs_kms_key_arn          = module.kms_logs.key_arn
  log_retention_days        = var.log_retention_days
  secret_recovery_days      = var.secret_recovery_window_days
  tags                      = local.tags
}

module "documentdb" {
  source = "./modules/documentdb"

  name                      = local.prefix
  instance_class            = var.documentdb_instance_class
  instance_count            = var.documentdb_instance_count
  vpc_id                    = module.network.vpc_id
  vpc_cidr                  = module.network.vpc_cidr
  subnet_ids                = module.network.private_subnet_ids
  client_security_group_ids = [module.eks.cluster_security_group_id]
  kms_key_arn               = module.kms_data.key_arn
  logs_kms_key_arn          = module.kms_logs.key_arn
  log_retention_days        = var.log_retention_days
  backup_retention_days     = var.documentdb_backup_retention_days
  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = var.documentdb_skip_final_snapshot
  secret_recovery_days      = var.secret_recovery_window_days
  tags                      = local.tags
}
