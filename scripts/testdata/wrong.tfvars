# Wrong on purpose: scripts/check-deploy proves check-tfvars.py rejects each line.
environment             = "dev"
kafka_broker_count      = "three"
no_such_variable        = 1
eks_node_instance_types = ["m7i.large", 3]
