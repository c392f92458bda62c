output "endpoint" {
  description = "Writer endpoint."
  value       = aws_docdb_cluster.this.endpoint
}

output "reader_endpoint" {
  description = "Reader endpoint."
  value       = aws_docdb_cluster.this.reader_endpoint
}

output "port" {
  description = "Port of the endpoints."
  value       = aws_docdb_cluster.this.port
}

output "master_secret_arn" {
  description = "Secrets Manager secret with the master username and password."
  value       = aws_secretsmanager_secret.master.arn
}

output "security_group_id" {
  description = "Security group of the cluster."
  value       = module.security_group.security_group_id
}
