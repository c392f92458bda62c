variable "needed" {
  description = "A required variable."
  type        = string
}

output "name" {
  description = "The variable, back."
  value       = var.needed
}
