variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "eu-west-1"
}

variable "environment" {
  description = "Environment name (dev, prod); part of every resource name."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.environment))
    error_message = "environment must be 2-16 lower-case letters, digits or hyphens, starting with a letter."
  }
}

variable "name" {
  description = "Name prefix of every resource."
  type        = string
  default     = "oms"
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

# --- network -------------------------------------------------------------------------------

variable "vpc_cidr" {
  description = "CIDR block of the VPC; split into three public and three private subnets."
  type        = string
  default     = "10.40.0.0/16"
}

variable "availability_zone_count" {
  description = "Availability zones to spread over."
  type        = number
  default     = 3

  validation {
    condition     = var.availability_zone_count >= 2 && var.availability_zone_count <= 3
    error_message = "availability_zone_count must be 2 or 3."
  }
}

variable "availability_zone_suffixes" {
  description = "Letters of the zones the stack may use, in order of preference (eu-west-1 + a, b, c)."
  type        = list(string)
  default     = ["a", "b", "c"]
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper, one zone's outage cuts egress) instead of one per zone."
  type        = bool
  default     = false
}

variable "log_retention_days" {
  description = "Retention of every CloudWatch log group (flow, EKS control plane, MSK, ElastiCache, DocumentDB)."
  type        = number
  default     = 365
}

# --- EKS -----------------------------------------------------------------------------------

variable "eks_version" {
  description = "Kubernetes version of the EKS control plane; 1.35 is in EKS standard support until 2027-03-27."
  type        = string
  default     = "1.35"
}

variable "eks_support_type" {
  description = "EKS support after a version's standard support ends: STANDARD upgrades the control plane then; EXTENDED keeps the version at about six times the control-plane price."
  type        = string
  default     = "STANDARD"

  validation {
    condition     = contains(["STANDARD", "EXTENDED"], var.eks_support_type)
    error_message = "eks_support_type is STANDARD or EXTENDED."
  }
}

variable "create_autoscaling_service_linked_role" {
  description = "Create the EC2 Auto Scaling service-linked role (AWSServiceRoleForAutoScaling), which a fresh account lacks until its first Auto Scaling group; set false where it exists already. The node volumes' KMS key names it in its policy."
  type        = bool
  default     = true
}

variable "eks_node_instance_types" {
  description = "Instance types of the managed node group."
  type        = list(string)
  default     = ["m7i.xlarge"]
}

variable "eks_node_desired_size" {
  description = "Desired nodes in the managed node group."
  type        = number
  default     = 3
}

variable "eks_node_min_size" {
  description = "Fewest nodes the cluster autoscaler may leave."
  type        = number
  default     = 3
}

variable "eks_node_max_size" {
  description = "Most nodes the cluster autoscaler may add."
  type        = number
  default     = 12
}

variable "eks_admin_principal_arns" {
  description = "IAM principals (users or roles) granted cluster-admin through EKS access entries."
  type        = list(string)
  default     = []
}

variable "eks_api_allowed_cidrs" {
  description = "CIDRs (VPN, bastion, CI runners) allowed to reach the private API endpoint."
  type        = list(string)
  default     = []
}

# --- MSK -----------------------------------------------------------------------------------

variable "kafka_version" {
  description = "Apache Kafka version of the MSK cluster."
  type        = string
  default     = "3.8.x"
}

variable "kafka_broker_count" {
  description = "MSK brokers; a multiple of availability_zone_count."
  type        = number
  default     = 3
}

variable "kafka_instance_type" {
  description = "MSK broker instance type."
  type        = string
  default     = "kafka.m7g.large"
}

variable "kafka_volume_size_gib" {
  description = "EBS storage per broker, GiB."
  type        = number
  default     = 500
}

# --- ElastiCache ---------------------------------------------------------------------------

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.r7g.large"
}

variable "redis_replicas" {
  description = "Read replicas besides the primary; at least 1 gives multi-AZ automatic failover."
  type        = number
  default     = 1
}

# --- DocumentDB ----------------------------------------------------------------------------

variable "documentdb_instance_class" {
  description = "DocumentDB instance class."
  type        = string
  default     = "db.r6g.large"
}

variable "documentdb_instance_count" {
  description = "DocumentDB instances (one writer, the rest readers)."
  type        = number
  default     = 3
}

variable "documentdb_backup_retention_days" {
  description = "Days of automated DocumentDB backups."
  type        = number
  default     = 14
}

variable "deletion_protection" {
  description = "Protect DocumentDB from deletion (turn off before destroying a stack)."
  type        = bool
  default     = true
}

variable "documentdb_skip_final_snapshot" {
  description = "Delete DocumentDB without a final snapshot on destroy; false keeps one (named <name>-<environment>-final)."
  type        = bool
  default     = false
}

variable "secret_recovery_window_days" {
  description = "Days a deleted Secrets Manager secret stays recoverable (and its name reserved): 0 deletes at once, so a destroyed stack can be applied again; 7 to 30 keeps a safety net."
  type        = number
  default     = 30

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days is 0 or 7 to 30."
  }
}
