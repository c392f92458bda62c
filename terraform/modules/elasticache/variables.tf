variable "name" {
  description = "Replication group id."
  type        = string
}

variable "node_type" {
  description = "Node type."
  type        = string
}

variable "replicas" {
  description = "Replicas besides the primary; 1 or more turns on multi-AZ automatic failover."
  type        = number
}

variable "engine_version" {
  description = "Redis OSS engine version."
  type        = string
  default     = "7.1"
}

variable "vpc_id" {
  description = "VPC of the nodes."
  type        = string
}

variable "vpc_cidr" {
  description = "CIDR of the VPC; the nodes talk to nothing outside it."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets."
  type        = list(string)
}

variable "client_security_group_ids" {
  description = "Security groups whose members may connect (the EKS cluster's)."
  type        = list(string)
}

variable "kms_key_arn" {
  description = "KMS key for data at rest and the AUTH token secret."
  type        = string
}

variable "logs_kms_key_arn" {
  description = "KMS key of the slow-log group."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the slow-log group."
  type        = number
  default     = 365
}

variable "snapshot_retention_days" {
  description = "Days of automatic snapshots."
  type        = number
  default     = 7
}

variable "secret_recovery_days" {
  description = "Recovery window of the secret (0: deleted at once)."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags of every resource."
  type        = map(string)
  default     = {}
}
