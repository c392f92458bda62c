# Wrong on purpose: one mistake per rule of scripts/check-tf-rules.py (scripts/check-deploy
# counts them).

locals {
  # lbc-policy: the guide beside this file installs another version.
  load_balancer_controller_version = "v3.5.0"
}

module "kms_logs" {
  source = "./modules/kms"
}

# ebs-key: encrypts node volumes, but Auto Scaling's service-linked role may not use it.
module "kms_eks" {
  source = "./modules/kms"
}

module "eks" {
  source          = "./modules/eks"
  ebs_kms_key_arn = module.kms_eks.key_arn
  support_type    = var.eks_support_type
}

module "documentdb" {
  source              = "./modules/documentdb"
  deletion_protection = false
}
