#!/usr/bin/env bash
# Install the system packages ManiSkill needs to render on the CPU: Mesa's lavapipe >= 24.3.
# On Debian 12 that is mesa-vulkan-drivers from bookworm-backports, added to the machine's own
# apt source entry (no mirror host is written anywhere). Debian 13 ships a new enough Mesa.
# Idempotent: does nothing when a suitable lavapipe is already installed.
set -euo pipefail

lvp_version() {
  dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true
}

is_new_enough() {
  local v="$1"
  [ -n "$v" ] && dpkg --compare-versions "$v" ge 24.3
}

if is_new_enough "$(lvp_version)" && [ -f /usr/share/vulkan/icd.d/lvp_icd.json ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
target=()
if [ "$codename" = "bookworm" ]; then
  deb822=/etc/apt/sources.list.d/debian.sources
  if [ -f "$deb822" ]; then
    if ! grep -qE '^Suites:.*bookworm-backports' "$deb822"; then
      # Add the suite to the first entry that carries "bookworm" (the main archive, not security).
      $SUDO sed -i '0,/^Suites: bookworm\b/s//Suites: bookworm bookworm-backports/' "$deb822"
    fi
  elif [ -f /etc/apt/sources.list ] && ! grep -q bookworm-backports /etc/apt/sources.list; then
    line=$(grep -E '^deb [^ ]+ bookworm main' /etc/apt/sources.list | head -n 1)
    [ -n "$line" ] || { echo "setup_system: no 'deb ... bookworm main' line to derive backports from" >&2; exit 1; }
    echo "${line/ bookworm / bookworm-backports }" | $SUDO tee /etc/apt/sources.list.d/backports.list >/dev/null
  fi
  target=(-t bookworm-backports)
fi

$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${target[@]}" \
  mesa-vulkan-drivers libvulkan1 vulkan-tools >/dev/null

v=$(lvp_version)
is_new_enough "$v" || { echo "setup_system: mesa-vulkan-drivers $v is older than 24.3; SAPIEN cannot render on the CPU" >&2; exit 1; }
echo "setup_system: mesa-vulkan-drivers $v"
