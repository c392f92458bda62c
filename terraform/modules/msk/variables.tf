variable "name" {
  description = "Cluster name."
  type        = string
}

variable "kafka_version" {
  description = "Apache Kafka version."
  type        = string
}

variable "broker_count" {
  description = "Brokers; a multiple of the number of subnets (one subnet per zone)."
  type        = number
}

variable "instance_type" {
  description = "Broker instance type."
  type        = string
}

variable "volume_size_gib" {
  description = "EBS storage per broker, GiB."
  type        = number
}

variable "vpc_id" {
  description = "VPC of the brokers."
  type        = string
}

variable "vpc_cidr" {
  description = "CIDR of the VPC; the brokers talk to nothing outside it."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets, one per availability zone."
  type        = list(string)
}

variable "client_security_group_ids" {
  description = "Security groups whose members may connect (the EKS cluster's)."
  type        = list(string)
}

variable "kms_key_arn" {
  description = "KMS key for data at rest and the SCRAM secret."
  type        = string
}

variable "logs_kms_key_arn" {
  description = "KMS key of the broker log group."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the broker log group."
  type        = number
  default     = 365
}

variable "iam_auth_enabled" {
  description = "Also open the IAM-authenticated listener (port 9098) besides SASL/SCRAM (9096)."
  type        = bool
  default     = false
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
