# Wrong on purpose: brokers not a multiple of the zones.
environment             = "dev"
availability_zone_count = 3
kafka_broker_count      = 4
