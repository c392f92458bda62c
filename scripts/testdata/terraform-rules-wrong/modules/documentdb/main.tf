variable "deletion_protection" {
  type = bool
}

# final-snapshot: turning protection off to destroy skips the snapshot.
resource "aws_docdb_cluster" "this" {
  cluster_identifier  = "wrong"
  deletion_protection = var.deletion_protection
  skip_final_snapshot = !var.deletion_protection
}

# secret-recovery: a fixed window reserves the name after a destroy.
resource "aws_secretsmanager_secret" "master" {
  name                    = "wrong/documentdb-master"
  recovery_window_in_days = 7
}
