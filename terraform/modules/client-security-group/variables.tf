variable "name" {
  description = "Name of the security group."
  type        = string
}

variable "description" {
  description = "What the group protects and who may connect."
  type        = string
}

variable "service" {
  description = "Name of the service in the rule descriptions (Redis, MongoDB, Kafka)."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the group."
  type        = string
}

variable "vpc_cidr" {
  description = "CIDR of the VPC; members talk to nothing outside it."
  type        = string
}

variable "ports" {
  description = "TCP ports the clients may connect to."
  type        = list(number)
}

variable "client_security_group_ids" {
  description = "Security groups whose members may connect (the EKS cluster's)."
  type        = list(string)
}

variable "allow_self" {
  description = "Let members talk to each other on every port (brokers replicating)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags of the group."
  type        = map(string)
  default     = {}
}
