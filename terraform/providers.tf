provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, {
      "project"     = "oms"
      "environment" = var.environment
      "managed-by"  = "terraform"
    })
  }
}
