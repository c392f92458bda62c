output "cluster_arn" {
  description = "ARN of the MSK cluster."
  value       = aws_msk_cluster.this.arn
}

output "cluster_name" {
  description = "Name of the MSK cluster."
  value       = aws_msk_cluster.this.cluster_name
}

output "bootstrap_brokers_sasl_scram" {
  description = "Bootstrap servers of the SASL/SCRAM over TLS listener (kafka.bootstrapServers)."
  value       = aws_msk_cluster.this.bootstrap_brokers_sasl_scram
}

output "bootstrap_brokers_sasl_iam" {
  description = "Bootstrap servers of the IAM listener (empty unless enabled)."
  value       = aws_msk_cluster.this.bootstrap_brokers_sasl_iam
}

output "replication_factor" {
  description = "Replication factor for the OMS topics (kafka.replicationFactor)."
  value       = local.replication_factor
}

output "min_insync_replicas" {
  description = "min.insync.replicas for the OMS topics (kafka.minInSyncReplicas)."
  value       = local.min_insync
}

output "scram_secret_arn" {
  description = "Secrets Manager secret with the OMS's SCRAM username and password."
  value       = aws_secretsmanager_secret.scram.arn
}

output "security_group_id" {
  description = "Security group of the brokers."
  value       = module.security_group.security_group_id
}
