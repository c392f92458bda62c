# TFLint with its built-in terraform ruleset at the "all" preset (naming, documented and typed
# variables and outputs, unused declarations, standard module structure, pinned providers).
# The AWS ruleset cannot be installed here (see docs/deployment-guide.md, "Checks").
config {
  call_module_type = "local"
}

plugin "terraform" {
  enabled = true
  preset  = "all"
}
