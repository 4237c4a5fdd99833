# Sourced by the image builders: sets $mirror to the Debian mirror apt on this machine uses
# (MIRROR overrides it; deb.debian.org when none is configured).
mirror=${MIRROR:-$(grep -hoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | tr -d ' ' || true)}
mirror=${mirror:-http://deb.debian.org/debian}
