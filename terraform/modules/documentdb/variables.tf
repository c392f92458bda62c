variable "name" {
  description = "Cluster identifier."
  type        = string
}

variable "engine_version" {
  description = "DocumentDB engine version."
  type        = string
  default     = "5.0.0"
}

variable "instance_class" {
  description = "Instance class."
  type        = string
}

variable "instance_count" {
  description = "Instances: one writer, the rest readers in other zones."
  type        = number
}

variable "vpc_id" {
  description = "VPC of the cluster."
  type        = string
}

variable "vpc_cidr" {
  description = "CIDR of the VPC; the cluster talks to nothing outside it."
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
  description = "KMS key for storage, backups and the master password secret."
  type        = string
}

variable "logs_kms_key_arn" {
  description = "KMS key of the audit and profiler log groups."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the exported log groups."
  type        = number
  default     = 365
}

variable "backup_retention_days" {
  description = "Days of automated backups."
  type        = number
}

variable "deletion_protection" {
  description = "Refuse deletion and take a final snapshot on destroy."
  type        = bool
  default     = true
}

variable "skip_final_snapshot" {
  description = "Delete the cluster without a final snapshot."
  type        = bool
  default     = false
}

variable "secret_recovery_days" {
  description = "Recovery window of the master secret (0: deleted at once)."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags of every resource."
  type        = map(string)
  default     = {}
}
