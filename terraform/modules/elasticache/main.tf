module "security_group" {
  source = "../client-security-group"

  name                      = "${var.name}-redis"
  description               = "ElastiCache Redis: TLS on 6379 from the EKS cluster only"
  service                   = "Redis"
  vpc_id                    = var.vpc_id
  vpc_cidr                  = var.vpc_cidr
  ports                     = [6379]
  client_security_group_ids = var.client_security_group_ids
  tags                      = var.tags
}

resource "aws_elasticache_subnet_group" "this" {
  name       = var.name
  subnet_ids = var.subnet_ids
  tags       = var.tags
}

# Idempotency keys must survive a node loss: AOF-like durability comes from replicas and
# failover; eviction would forget keys, so none is allowed.
resource "aws_elasticache_parameter_group" "this" {
  name   = "${var.name}-redis7"
  family = "redis7"

  parameter {
    name  = "maxmemory-policy"
    value = "noeviction"
  }

  tags = var.tags
}

resource "random_password" "auth" {
  length  = 48
  special = false
}

resource "aws_secretsmanager_secret" "auth" {
  # checkov:skip=CKV2_AWS_57:ElastiCache AUTH has no managed rotation; rotate with -replace=module.elasticache.random_password.auth (ROTATE keeps the old token valid meanwhile)
  name                    = "${var.name}/redis-auth"
  description             = "AUTH token of ElastiCache ${var.name}"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = var.secret_recovery_days
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "auth" {
  secret_id     = aws_secretsmanager_secret.auth.id
  secret_string = random_password.auth.result
}

resource "aws_cloudwatch_log_group" "slow" {
  name              = "/aws/elasticache/${var.name}/slow-log"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
  tags              = var.tags
}

resource "aws_elasticache_replication_group" "this" {
  # checkov:skip=CKV2_AWS_50:failover and multi-AZ are on whenever replicas >= 1 (dev 1, prod 2); checkov cannot evaluate the expression
  replication_group_id = var.name
  description          = "OMS idempotency keys"
  engine               = "redis"
  engine_version       = var.engine_version
  node_type            = var.node_type
  port                 = 6379
  parameter_group_name = aws_elasticache_parameter_group.this.name
  subnet_group_name    = aws_elasticache_subnet_group.this.name
  security_group_ids   = [module.security_group.security_group_id]

  num_cache_clusters         = var.replicas + 1
  automatic_failover_enabled = var.replicas >= 1
  multi_az_enabled           = var.replicas >= 1

  at_rest_encryption_enabled = true
  kms_key_id                 = var.kms_key_arn
  transit_encryption_enabled = true
  transit_encryption_mode    = "required"
  auth_token                 = random_password.auth.result
  auth_token_update_strategy = "ROTATE"

  snapshot_retention_limit   = var.snapshot_retention_days
  snapshot_window            = "03:00-04:00"
  maintenance_window         = "sun:04:30-sun:05:30"
  auto_minor_version_upgrade = true
  apply_immediately          = false

  log_delivery_configuration {
    destination      = aws_cloudwatch_log_group.slow.name
    destination_type = "cloudwatch-logs"
    log_format       = "json"
    log_type         = "slow-log"
  }

  tags = var.tags
}
