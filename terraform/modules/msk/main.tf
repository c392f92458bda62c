locals {
  # The OMS's durability contract: acks=all reaches min.insync.replicas of 3 replicas.
  replication_factor = min(3, var.broker_count)
  min_insync         = max(1, local.replication_factor - 1)
}

module "security_group" {
  source = "../client-security-group"

  name                      = "${var.name}-msk"
  description               = "MSK brokers: SASL/SCRAM (and IAM) over TLS from the EKS cluster only"
  service                   = "Kafka"
  vpc_id                    = var.vpc_id
  vpc_cidr                  = var.vpc_cidr
  ports                     = [9096, 9098]
  client_security_group_ids = var.client_security_group_ids
  allow_self                = true
  tags                      = var.tags
}

resource "aws_msk_configuration" "this" {
  name           = var.name
  kafka_versions = [var.kafka_version]
  description    = "OMS: topics are created by the operator; acks=all needs min.insync.replicas"

  server_properties = <<-PROPERTIES
    auto.create.topics.enable=false
    default.replication.factor=${local.replication_factor}
    min.insync.replicas=${local.min_insync}
    unclean.leader.election.enable=false
    offsets.retention.minutes=43200
    transaction.state.log.replication.factor=${local.replication_factor}
    transaction.state.log.min.isr=${local.min_insync}
  PROPERTIES
}

resource "aws_cloudwatch_log_group" "brokers" {
  name              = "/aws/msk/${var.name}/brokers"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
  tags              = var.tags
}

resource "aws_msk_cluster" "this" {
  cluster_name           = var.name
  kafka_version          = var.kafka_version
  number_of_broker_nodes = var.broker_count
  enhanced_monitoring    = "PER_TOPIC_PER_PARTITION"

  broker_node_group_info {
    instance_type   = var.instance_type
    client_subnets  = var.subnet_ids
    security_groups = [module.security_group.security_group_id]

    storage_info {
      ebs_storage_info {
        volume_size = var.volume_size_gib
      }
    }

    connectivity_info {
      public_access {
        type = "DISABLED"
      }
    }
  }

  configuration_info {
    arn      = aws_msk_configuration.this.arn
    revision = aws_msk_configuration.this.latest_revision
  }

  client_authentication {
    unauthenticated = false

    sasl {
      scram = true
      iam   = var.iam_auth_enabled
    }
  }

  encryption_info {
    encryption_at_rest_kms_key_arn = var.kms_key_arn

    encryption_in_transit {
      client_broker = "TLS"
      in_cluster    = true
    }
  }

  open_monitoring {
    prometheus {
      jmx_exporter {
        enabled_in_broker = true
      }

      node_exporter {
        enabled_in_broker = true
      }
    }
  }

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.brokers.name
      }
    }
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = var.broker_count % length(var.subnet_ids) == 0
      error_message = "kafka_broker_count must be a multiple of the number of availability zones."
    }
  }
}

# --- SASL/SCRAM credentials of the OMS (MSK reads them from Secrets Manager) ------------------

resource "random_password" "scram" {
  length  = 32
  special = false
}

resource "aws_secretsmanager_secret" "scram" {
  # checkov:skip=CKV2_AWS_57:MSK SCRAM secrets have no managed rotation; rotate with terraform apply -replace=module.msk.random_password.scram (docs/deployment-guide.md)
  # MSK only accepts secrets named AmazonMSK_* encrypted with a customer managed key.
  name                    = "AmazonMSK_${var.name}_oms"
  description             = "SASL/SCRAM credentials of the OMS on ${var.name}"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = var.secret_recovery_days
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "scram" {
  secret_id = aws_secretsmanager_secret.scram.id
  secret_string = jsonencode({
    username = "oms"
    password = random_password.scram.result
  })
}

resource "aws_msk_scram_secret_association" "this" {
  cluster_arn     = aws_msk_cluster.this.arn
  secret_arn_list = [aws_secretsmanager_secret.scram.arn]

  depends_on = [aws_secretsmanager_secret_version.scram]
}
