#!/usr/bin/env bash
# Provision CPython 3.9 (the oldest Python the rig client distribution claims) from Debian 11's
# package archive and print the path of an interpreter wrapper on stdout; everything else goes to
# stderr. Nothing is built and nothing is installed system-wide: the .deb packages are unpacked
# into $TWIN_PY39_PREFIX (default /tmp/twin-ci-py39).
#
# Trust chain: bullseye's InRelease is checked with gpgv against the Debian archive keyring of this
# (Debian 12) machine; the Packages index is checked against the SHA256 that InRelease lists, and
# every .deb against the SHA256 that the index lists.
#
# The wrapper sets LD_LIBRARY_PATH to the unpacked libssl1.1 and libffi7 (3.9's _ssl and _ctypes
# need them; Debian 12 ships newer sonames). A venv made with the wrapper links to the real binary,
# so run its python with the same LD_LIBRARY_PATH: `. "$prefix/env.sh"` sets it.
# Fails (non-zero) without the archive; the client distribution test then fails.
set -euo pipefail
prefix=${TWIN_PY39_PREFIX:-/tmp/twin-ci-py39}
mirror=${TWIN_DEBIAN_MIRROR:-https://deb.debian.org/debian}
suite=bullseye
keyring=${TWIN_DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
wrapper="$prefix/bin/python3.9"
if [ -x "$wrapper" ] && "$wrapper" -c 'import sys, ssl, ctypes; assert sys.version_info[:2] == (3, 9)' 2>/dev/null; then
  echo "$wrapper"
  exit 0
fi
for tool in curl gpgv xz dpkg-deb sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || { echo "python39.sh: $tool is missing" >&2; exit 1; }
done
packages=(python3.9-minimal libpython3.9-minimal libpython3.9-stdlib libssl1.1 libffi7 python3-distutils python3-lib2to3)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "python39.sh: fetching CPython 3.9 from Debian $suite ($mirror)" >&2
curl -fsS --retry 3 -o "$work/InRelease" "$mirror/dists/$suite/InRelease"
gpgv --keyring "$keyring" --output "$work/Release" "$work/InRelease" 2>"$work/gpgv.log" || { cat "$work/gpgv.log" >&2; echo "python39.sh: InRelease signature check failed" >&2; exit 1; }
index=main/binary-amd64/Packages.xz
want=$(awk -v f="$index" '/^SHA256:/{s=1; next} /^[A-Za-z]/{s=0} s && $3==f {print $1}' "$work/Release")
[ -n "$want" ] || { echo "python39.sh: $index not listed in Release" >&2; exit 1; }
curl -fsS --retry 3 -o "$work/Packages.xz" "$mirror/dists/$suite/$index"
echo "$want  $work/Packages.xz" | sha256sum -c --quiet - >&2
xz -d "$work/Packages.xz"
rm -rf "$prefix" && mkdir -p "$prefix/root" "$prefix/bin"
for pkg in "${packages[@]}"; do
  read -r file sha < <(awk -v p="$pkg" '
    /^Package: /{cur=$2; fn=""; sh=""}
    cur==p && /^Filename: /{fn=$2}
    cur==p && /^SHA256: /{sh=$2}
    /^$/ && cur==p && fn!="" {print fn, sh; exit}' "$work/Packages")
  [ -n "${file:-}" ] || { echo "python39.sh: package $pkg not found in $suite" >&2; exit 1; }
  curl -fsS --retry 3 -o "$work/$pkg.deb" "$mirror/$file"
  echo "$sha  $work/$pkg.deb" | sha256sum -c --quiet - >&2
  dpkg-deb -x "$work/$pkg.deb" "$prefix/root"
  echo "python39.sh: unpacked $file" >&2
done
libs="$prefix/root/usr/lib/x86_64-linux-gnu"
cat >"$prefix/env.sh" <<EOF
export LD_LIBRARY_PATH="$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF
cat >"$wrapper" <<EOF
#!/usr/bin/env bash
. "$prefix/env.sh"
exec "$prefix/root/usr/bin/python3.9" "\$@"
EOF
chmod +x "$wrapper"
"$wrapper" -c 'import sys, ssl, ctypes, sqlite3, venv; print("python39.sh:", sys.version.split()[0], sys.prefix, ssl.OPENSSL_VERSION)' >&2
echo "$wrapper"
