# Production: three zones with a NAT gateway each, six brokers (MSK needs a multiple of the
# zones: the seed's five cannot be spread evenly, six keep two per zone and replication factor
# 3 with min ISR 2), three to twelve nodes, multi-AZ Redis failover, three DocumentDB
# instances, a year of logs.  terraform apply -var-file=environments/prod.tfvars
environment = "prod"
region      = "eu-west-1"

vpc_cidr                = "10.50.0.0/16"
availability_zone_count = 3
single_nat_gateway      = false
log_retention_days      = 365

eks_version             = "1.35"
eks_node_instance_types = ["m7i.xlarge"]
eks_node_desired_size   = 3
eks_node_min_size       = 3
eks_node_max_size       = 12
eks_api_allowed_cidrs   = ["10.0.0.0/8"]

kafka_broker_count    = 6
kafka_instance_type   = "kafka.m7g.large"
kafka_volume_size_gib = 1000

redis_node_type = "cache.r7g.large"
redis_replicas  = 2

documentdb_instance_class        = "db.r6g.large"
documentdb_instance_count        = 3
documentdb_backup_retention_days = 35
deletion_protection              = true
# A final snapshot on destroy, and a 30-day safety net for deleted secrets (the guide's
# teardown force-deletes them when the stack is gone for good).
documentdb_skip_final_snapshot = false
secret_recovery_window_days    = 30

tags = {
  "cost-center" = "oms-prod"
}
