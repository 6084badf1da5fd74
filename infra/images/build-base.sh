#!/usr/bin/env bash
# Build the molecule base image ONCE and keep it in podman's local store.
#
#   infra/images/build-base.sh            # no-op when the image already exists
#   infra/images/build-base.sh --force    # rebuild
#
# No container registry is reachable, so the image is a debootstrap'd Debian 12 (minbase)
# with systemd as PID 1, imported with `podman import`. Needs root, debootstrap and podman.
# Change BASE_PACKAGES => bump the tag so every machine rebuilds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/../containers.conf}"

IMAGE="${WS_KIT_BASE_IMAGE:-localhost/ws-kit-base:bookworm-v1}"
SUITE=bookworm
# python3-apt: Ansible's apt module; python3-venv: the api role's virtualenv.
BASE_PACKAGES=systemd,systemd-sysv,dbus,python3,python3-apt,python3-venv,sudo,ca-certificates,curl

if [[ "${1:-}" != "--force" ]] && podman image exists "$IMAGE"; then
    echo "build-base: $IMAGE already present (use --force to rebuild)"
    exit 0
fi

for tool in debootstrap podman; do
    command -v "$tool" >/dev/null || { echo "build-base: $tool not installed (apt-get install -y debootstrap podman runc)" >&2; exit 1; }
done

rootfs="$(mktemp -d /var/tmp/ws-kit-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT

start=$SECONDS
debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" >"$rootfs.log" 2>&1 \
    || { tail -30 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"

# Trim and make it container-friendly: no getty/udev noise, no apt archives, a machine-id
# created at boot, and a policy that lets package postinst scripts start services.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb
: >"$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id"
for unit in getty.target systemd-udevd.service systemd-udev-trigger.service \
            systemd-modules-load.service sys-kernel-config.mount sys-kernel-debug.mount \
            systemd-remount-fs.service; do
    ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done

tar -C "$rootfs" -c . | podman import --change 'CMD ["/sbin/init"]' - "$IMAGE" >/dev/null
echo "build-base: built $IMAGE in $((SECONDS - start)) s"
