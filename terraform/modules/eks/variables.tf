variable "name" {
  description = "Cluster name."
  type        = string
}

variable "kubernetes_version" {
  description = "Kubernetes version of the control plane and the nodes."
  type        = string
}

variable "support_type" {
  description = "STANDARD (upgrade when standard support ends) or EXTENDED (paid extended support)."
  type        = string
  default     = "STANDARD"
}

variable "vpc_id" {
  description = "VPC of the cluster."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the control plane's interfaces and of the nodes."
  type        = list(string)
}

variable "api_allowed_cidrs" {
  description = "CIDRs allowed to reach the private API endpoint (besides the nodes)."
  type        = list(string)
  default     = []
}

variable "admin_principal_arns" {
  description = "IAM principals granted cluster-admin through access entries."
  type        = list(string)
  default     = []
}

variable "secrets_kms_key_arn" {
  description = "KMS key that envelope-encrypts Kubernetes Secrets."
  type        = string
}

variable "ebs_kms_key_arn" {
  description = "KMS key that encrypts the nodes' volumes."
  type        = string
}

variable "logs_kms_key_arn" {
  description = "KMS key of the control-plane log group."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the control-plane log group."
  type        = number
  default     = 365
}

variable "node_instance_types" {
  description = "Instance types of the managed node group."
  type        = list(string)
}

variable "node_desired_size" {
  description = "Desired nodes."
  type        = number
}

variable "node_min_size" {
  description = "Fewest nodes."
  type        = number
}

variable "node_max_size" {
  description = "Most nodes."
  type        = number
}

variable "node_disk_size_gib" {
  description = "Root volume of each node, GiB."
  type        = number
  default     = 50
}

variable "tags" {
  description = "Tags of every resource."
  type        = map(string)
  default     = {}
}
