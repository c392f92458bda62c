# Everything an OrderSystem and the chart's values need; docs/deployment-guide.md uses each.

output "region" {
  description = "AWS region of the stack."
  value       = var.region
}

output "cluster_name" {
  description = "EKS cluster name (aws eks update-kubeconfig --name ...)."
  value       = module.eks.cluster_name
}

output "cluster_endpoint" {
  description = "Private endpoint of the Kubernetes API."
  value       = module.eks.cluster_endpoint
}

output "vpc_id" {
  description = "VPC id (the AWS Load Balancer Controller's vpcId value)."
  value       = module.network.vpc_id
}

output "nat_public_ips" {
  description = "Egress addresses, for allow-lists."
  value       = module.network.nat_public_ips
}

output "kafka_bootstrap_brokers_sasl_scram" {
  description = "OrderSystem spec.kafka.bootstrapServers (SASL/SCRAM over TLS, port 9096)."
  value       = module.msk.bootstrap_brokers_sasl_scram
}

output "kafka_replication_factor" {
  description = "OrderSystem spec.kafka.replicationFactor."
  value       = module.msk.replication_factor
}

output "kafka_min_insync_replicas" {
  description = "OrderSystem spec.kafka.minInSyncReplicas."
  value       = module.msk.min_insync_replicas
}

output "kafka_scram_secret_arn" {
  description = "Secret with the SCRAM username and password (the kafka.properties Secret)."
  value       = module.msk.scram_secret_arn
}

output "redis_primary_endpoint" {
  description = "ElastiCache primary endpoint; the OrderSystem's Redis URL is rediss://:<token>@<this>:6379."
  value       = module.elasticache.primary_endpoint
}

output "redis_auth_secret_arn" {
  description = "Secret with the Redis AUTH token."
  value       = module.elasticache.auth_secret_arn
}

output "documentdb_endpoint" {
  description = "DocumentDB writer endpoint, for the MongoDB URI Secret."
  value       = module.documentdb.endpoint
}

output "documentdb_master_secret_arn" {
  description = "Secret with the DocumentDB master username and password."
  value       = module.documentdb.master_secret_arn
}

output "operator_role_arn" {
  description = "Chart value serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn."
  value       = aws_iam_role.irsa["operator"].arn
}

output "load_balancer_controller_role_arn" {
  description = "IRSA role of the AWS Load Balancer Controller (kube-system/aws-load-balancer-controller)."
  value       = aws_iam_role.irsa["load_balancer_controller"].arn
}

output "cluster_autoscaler_role_arn" {
  description = "IRSA role of the cluster autoscaler (kube-system/cluster-autoscaler)."
  value       = aws_iam_role.irsa["cluster_autoscaler"].arn
}
