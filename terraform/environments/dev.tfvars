# Development: smallest sizes that keep the production shape (3 zones, TLS, KMS everywhere).
# terraform apply -var-file=environments/dev.tfvars
environment = "dev"
region      = "eu-west-1"

vpc_cidr                = "10.40.0.0/16"
availability_zone_count = 3
single_nat_gateway      = true
# Logs keep a year here too: audit trails of a trading system, and cheap at dev volume.
log_retention_days = 365

eks_version             = "1.34"
eks_node_instance_types = ["t3.large"]
eks_node_desired_size   = 2
eks_node_min_size       = 2
eks_node_max_size       = 4

kafka_broker_count    = 3
kafka_instance_type   = "kafka.t3.small"
kafka_volume_size_gib = 50

redis_node_type = "cache.t4g.small"
redis_replicas  = 1

documentdb_instance_class        = "db.t4g.medium"
documentdb_instance_count        = 1
documentdb_backup_retention_days = 7
deletion_protection              = false

tags = {
  "cost-center" = "oms-dev"
}
