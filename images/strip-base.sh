#!/bin/sh
# Runs inside the "root" stage of images/Containerfile, as root, on either base
# (python:3.11-slim, or Debian's python3 from debootstrap): drops what a running component
# never uses, compiles the standard library's bytecode, and adds the nonroot user (65532, as
# distroless images). POSIX sh: the bases have no bash guarantee.
set -eu
PY=$(command -v python3)
stdlib=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')

# Installers and their wheels: the image never installs anything.
for d in /usr/local/lib/python3*/site-packages /usr/lib/python3/dist-packages; do
    [ -d "$d" ] || continue
    rm -rf "$d"/pip "$d"/pip-* "$d"/setuptools "$d"/setuptools-* "$d"/_distutils_hack \
        "$d"/distutils-precedence.pth "$d"/pkg_resources "$d"/wheel "$d"/wheel-*
done
rm -rf /usr/local/bin/pip* /usr/local/bin/idle* /usr/local/bin/pydoc* /usr/local/bin/2to3* \
    /usr/share/python-wheels "$stdlib/ensurepip"

# The standard library's tests, GUI, and tools that only serve an interactive user.
rm -rf "$stdlib/test" "$stdlib/idlelib" "$stdlib/tkinter" "$stdlib/turtledemo" \
    "$stdlib/turtle.py" "$stdlib/lib2to3" "$stdlib/pydoc_data" "$stdlib"/config-*/*.a \
    "$stdlib"/lib-dynload/_tkinter*.so "$stdlib"/lib-dynload/_test*.so \
    "$stdlib"/lib-dynload/xxlimited*.so /usr/local/include /usr/include/python3*
find "$stdlib" -depth -type d \( -name test -o -name tests \) -exec rm -rf {} +

# No package manager at run time (as distroless): apt, and perl, which only dpkg's and
# debconf's maintainer scripts use; glibc's iconv modules (Python has its own codecs).
rm -rf /usr/bin/apt* /usr/lib/apt /usr/lib/*-linux-gnu/libapt-* /usr/bin/perl* \
    /usr/lib/*-linux-gnu/perl-base /usr/lib/*-linux-gnu/perl /usr/share/perl* \
    /usr/lib/*-linux-gnu/gconv /usr/share/debconf /usr/share/zoneinfo/right \
    /usr/share/zoneinfo/posix

# Docs, locales and package-manager caches (the dpkg database stays, for image scanners).
rm -rf /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/* \
    /usr/share/lintian /usr/share/linda /var/cache/apt/* /var/lib/apt/lists/* \
    /var/cache/debconf/*-old /var/lib/dpkg/*-old /var/log/* /root/.cache /tmp/*

# Bytecode for what is left: uid 65532 cannot write __pycache__ under the stdlib, so without
# it every start would compile asyncio, email, http... again. Debian's base already has it.
"$PY" -m compileall -q -j0 "$stdlib" >/dev/null

grep -q '^nonroot:' /etc/group || echo 'nonroot:x:65532:' >>/etc/group
grep -q '^nonroot:' /etc/passwd ||
    echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin' >>/etc/passwd
mkdir -p /home/nonroot
chown 65532:65532 /home/nonroot
chmod 0750 /home/nonroot
