# eks-support: the default is extended support.
variable "eks_support_type" {
  type    = string
  default = "EXTENDED"
}
