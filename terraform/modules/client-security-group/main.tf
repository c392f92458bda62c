# The security group of a data service: its ports from the clients' groups, nothing out of the VPC.

resource "aws_security_group" "this" {
  name        = var.name
  description = var.description
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  for_each = { for pair in setproduct(var.client_security_group_ids, var.ports) : "${pair[0]}-${pair[1]}" => pair }

  security_group_id            = aws_security_group.this.id
  description                  = "${var.service} clients on ${each.value[1]}"
  referenced_security_group_id = each.value[0]
  from_port                    = each.value[1]
  to_port                      = each.value[1]
  ip_protocol                  = "tcp"
}

resource "aws_vpc_security_group_ingress_rule" "self" {
  count = var.allow_self ? 1 : 0

  security_group_id            = aws_security_group.this.id
  description                  = "${var.service} members to each other"
  referenced_security_group_id = aws_security_group.this.id
  ip_protocol                  = "-1"
}

resource "aws_vpc_security_group_egress_rule" "vpc" {
  security_group_id = aws_security_group.this.id
  description       = "Within the VPC only"
  cidr_ipv4         = var.vpc_cidr
  ip_protocol       = "-1"
}
