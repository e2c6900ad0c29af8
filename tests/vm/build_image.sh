#!/usr/bin/env bash
# Build (once) the Debian 12 guest for the full-kernel check: debootstrap minbase plus
# linux-image-amd64, provisioned with the project's own ./setup.sh inside a chroot.
# Cached outside the repo under $SPACECOMP_VM_CACHE (default /var/cache/spacecomp-vm),
# keyed by the hash of setup.sh, pyproject.toml and this script; prints the cache dir.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cache=${SPACECOMP_VM_CACHE:-/var/cache/spacecomp-vm}
key=$(cat "$repo/setup.sh" "$repo/pyproject.toml" "$0" | sha256sum | cut -c1-16)
dir=$cache/$key
if [ -f "$dir/ready" ]; then
    echo "$dir"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "build_image.sh: needs root (debootstrap, chroot)" >&2
    exit 2
fi

need=()
for p in debootstrap qemu-system-x86 e2fsprogs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

root=$dir.tmp/rootfs
mirror=${SPACECOMP_VM_MIRROR:-http://deb.debian.org/debian}
# The debootstrap stage is kept when a later stage fails, so a retry resumes after it.
if [ ! -f "$dir.tmp/debootstrap.done" ]; then
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp"
    echo "build_image.sh: debootstrap into $root" >&2
    debootstrap --variant=minbase \
        --include=linux-image-amd64,ca-certificates,kmod,procps,iproute2,git \
        bookworm "$root" "$mirror" >"$dir.tmp/debootstrap.log" 2>&1 \
        || { tail -20 "$dir.tmp/debootstrap.log" >&2; exit 1; }
    touch "$dir.tmp/debootstrap.done"
fi

# Provision with the project's own set-up, in a chroot where services must not start.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
mkdir -p "$root/opt/spacecomp"
(cd "$repo" && git ls-files -z | xargs -0 tar cf - --no-recursion) | tar xf - -C "$root/opt/spacecomp"
cleanup() { for m in dev/pts dev sys proc; do umount -l "$root/$m" 2>/dev/null || true; done; }
trap cleanup EXIT
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# Trust what the host trusts locally (e.g. a TLS-inspecting egress proxy's CA).
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null 2>&1
fi
echo "build_image.sh: provisioning with setup.sh" >&2
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    /opt/spacecomp/setup.sh >"$dir.tmp/setup.log" 2>&1 \
    || { tail -20 "$dir.tmp/setup.log" >&2; exit 1; }
cleanup
trap - EXIT
rm -f "$root/usr/sbin/policy-rc.d"
echo spacecomp-vm > "$root/etc/hostname"
apt_cache=$root/var/cache/apt/archives
rm -f "$apt_cache"/*.deb
cp "$root"/boot/vmlinuz-* "$dir.tmp/vmlinuz"
cp "$root"/boot/initrd.img-* "$dir.tmp/initrd.img"
touch "$dir.tmp/ready"
rm -rf "$dir"
mv "$dir.tmp" "$dir"
# Older images (other set-up hashes) are dead weight: keep only this one.
find "$cache" -mindepth 1 -maxdepth 1 ! -name "$key" ! -name "$key.tmp" -exec rm -rf {} +
echo "$dir"
