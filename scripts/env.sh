# Sourced by the project's scripts: one fixed cache folder outside the clone, shared by CI runs
# and later sessions (Cargo target dir, downloaded service jars, built Go tools).
export OMS_CACHE="${OMS_CACHE:-$HOME/.cache/oms}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$OMS_CACHE/target}"
mkdir -p "$OMS_CACHE"

step() { printf '\n==> %s\n' "$*"; }

# The local node's pod sandbox image: scripts/images builds it, scripts/services configures
# containerd with it.
PAUSE_IMAGE=localhost/oms-pause:1
