# Development, the seed's dev sizes: two zones, two brokers (replication factor 2, min ISR 1),
# one NAT gateway, one node; TLS and KMS everywhere as in production.
# terraform apply -var-file=environments/dev.tfvars
environment = "dev"
region      = "eu-west-1"

vpc_cidr                = "10.40.0.0/16"
availability_zone_count = 2
single_nat_gateway      = true
# Logs keep a year here too: audit trails of a trading system, and cheap at dev volume.
log_retention_days = 365

eks_version             = "1.35"
eks_node_instance_types = ["t3.xlarge"]
eks_node_desired_size   = 1
eks_node_min_size       = 1
eks_node_max_size       = 3

kafka_broker_count    = 2
kafka_instance_type   = "kafka.t3.small"
kafka_volume_size_gib = 50

redis_node_type = "cache.t4g.small"
redis_replicas  = 1

documentdb_instance_class        = "db.t4g.medium"
documentdb_instance_count        = 1
documentdb_backup_retention_days = 7
deletion_protection              = false
documentdb_skip_final_snapshot   = true
# Secrets deleted at once, so that a destroyed dev stack can be applied again at once.
secret_recovery_window_days = 0

tags = {
  "cost-center" = "oms-dev"
}
