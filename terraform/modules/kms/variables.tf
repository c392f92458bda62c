variable "name" {
  description = "Key alias, without the alias/ prefix."
  type        = string
}

variable "description" {
  description = "What the key encrypts."
  type        = string
}

variable "cloudwatch_logs_region" {
  description = "Region whose CloudWatch Logs may encrypt this account's log groups with the key; null for none."
  type        = string
  default     = null
}

variable "service_linked_role_arns" {
  description = "Service-linked roles (such as AWSServiceRoleForAutoScaling) that may use the key and create grants for AWS resources."
  type        = list(string)
  default     = []
}

variable "deletion_window_in_days" {
  description = "Waiting period before a scheduled deletion."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags of the key."
  type        = map(string)
  default     = {}
}
