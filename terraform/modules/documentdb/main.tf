module "security_group" {
  source = "../client-security-group"

  name                      = "${var.name}-docdb"
  description               = "DocumentDB: TLS on 27017 from the EKS cluster only"
  service                   = "MongoDB"
  vpc_id                    = var.vpc_id
  vpc_cidr                  = var.vpc_cidr
  ports                     = [27017]
  client_security_group_ids = var.client_security_group_ids
  tags                      = var.tags
}

resource "aws_docdb_subnet_group" "this" {
  name       = var.name
  subnet_ids = var.subnet_ids
  tags       = var.tags
}

resource "aws_docdb_cluster_parameter_group" "this" {
  name        = "${var.name}-docdb5"
  family      = "docdb5.0"
  description = "TLS required, audit and profiler logs on"

  parameter {
    name  = "tls"
    value = "enabled"
  }

  parameter {
    name  = "audit_logs"
    value = "enabled"
  }

  parameter {
    name  = "profiler"
    value = "enabled"
  }

  parameter {
    name  = "profiler_threshold_ms"
    value = "200"
  }

  tags = var.tags
}

# Created first so that retention and encryption apply to the exported logs.
resource "aws_cloudwatch_log_group" "exports" {
  for_each = toset(["audit", "profiler"])

  name              = "/aws/docdb/${var.name}/${each.value}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
  tags              = var.tags
}

resource "random_password" "master" {
  length  = 40
  special = false
}

resource "aws_secretsmanager_secret" "master" {
  # checkov:skip=CKV2_AWS_57:the OMS logs in with its own user; rotate the master with -replace=module.documentdb.random_password.master
  name                    = "${var.name}/documentdb-master"
  description             = "Master user of DocumentDB ${var.name}"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = var.secret_recovery_days
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "master" {
  secret_id = aws_secretsmanager_secret.master.id
  secret_string = jsonencode({
    username = "omsadmin"
    password = random_password.master.result
  })
}

resource "aws_docdb_cluster" "this" {
  cluster_identifier              = var.name
  engine                          = "docdb"
  engine_version                  = var.engine_version
  master_username                 = "omsadmin"
  master_password                 = random_password.master.result
  db_subnet_group_name            = aws_docdb_subnet_group.this.name
  db_cluster_parameter_group_name = aws_docdb_cluster_parameter_group.this.name
  vpc_security_group_ids          = [module.security_group.security_group_id]

  storage_encrypted = true
  kms_key_id        = var.kms_key_arn

  enabled_cloudwatch_logs_exports = ["audit", "profiler"]
  backup_retention_period         = var.backup_retention_days
  preferred_backup_window         = "02:00-03:00"
  preferred_maintenance_window    = "sun:05:30-sun:06:30"

  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = var.skip_final_snapshot
  final_snapshot_identifier = "${var.name}-final"

  tags = var.tags

  depends_on = [aws_cloudwatch_log_group.exports]
}

resource "aws_docdb_cluster_instance" "this" {
  count = var.instance_count

  identifier                 = "${var.name}-${count.index}"
  cluster_identifier         = aws_docdb_cluster.this.id
  instance_class             = var.instance_class
  auto_minor_version_upgrade = true
  tags                       = var.tags
}
