#!/bin/bash
# PID 1 of the full-kernel check guest: mount the basics, run the guest checks,
# print the result between markers on the serial console, power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/lock /var/run/netns
echo 1 > /proc/sys/kernel/sysrq
ip link set lo up
hostname spacecomp-vm
cd /opt/spacecomp || exit 1
echo "SPACECOMP-VM-BEGIN"
timeout "${SPACECOMP_VM_GUEST_TIMEOUT:-1000}" .venv/bin/python tests/vm/guest_checks.py
rc=$?
echo "SPACECOMP-VM-END rc=$rc"
sync
echo o > /proc/sysrq-trigger
sleep 30
