#!/usr/bin/env bash
# `make image`: builds the container image (deploy/Containerfile) with
# buildah and tags it localhost/tern:<version> and localhost/tern:latest
# (<version> is the project version in CMakeLists.txt).
#   1. installs buildah and debootstrap through apt-get when missing
#   2. when debian:bookworm-slim is not in local storage, builds that base
#      locally (debootstrap --variant=minbase from the Debian mirror apt
#      already uses) and stores it as localhost/debian:bookworm-slim, so no
#      image registry is needed
#   3. buildah bud --isolation chroot --layers --pull=never, with the host's
#      ccache folder mounted at /ccache for the compile stage
#
#   TERN_CCACHE_DIR=DIR   the ccache folder to mount (default: the one the
#                         host's ccache uses)
#   TERN_IMAGE_NICE=N     the compile's niceness (default 10; 0 for none)
# Runs as root (buildah's chroot isolation and debootstrap need it); re-runs
# itself through sudo otherwise.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [ "$(id -u)" -ne 0 ]; then
  exec sudo --preserve-env=TERN_CCACHE_DIR,TERN_IMAGE_NICE bash "$0" "$@"
fi

base="debian:bookworm-slim"
version="$(sed -nE 's/^project\(tern VERSION ([0-9.]+).*/\1/p' CMakeLists.txt)"
version="${version:-dev}"
image="localhost/tern"
start_all=$SECONDS

# step NAME: announces a step; `done_step` reports its duration.
step() {
  step_name=$1 step_start=$SECONDS
  echo "[image] $step_name"
}
done_step() { echo "[image] $step_name: done in $((SECONDS - step_start)) s"; }

# --- 1. tools ----------------------------------------------------------------
missing=()
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if ((${#missing[@]})); then
  step "installing Debian packages: ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  done_step
fi

# --- 2. the base image ----------------------------------------------------------

# Prints "URI SUITE" for every `deb` source of the host's apt, from both the
# one-line format (sources.list, *.list) and deb822 (*.sources).
apt_sources() {
  local f
  shopt -s nullglob
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [options] URI SUITE COMPONENTS...
    awk '$1 == "deb" {
           i = 2
           if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
           print $i, $(i + 1)
         }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    # One stanza per paragraph; comments dropped; Enabled: no skipped.
    awk 'BEGIN { RS = ""; FS = "\n" }
         {
           types = ""; uris = ""; suites = ""; enabled = "yes"
           for (n = 1; n <= NF; n++) {
             line = $n
             if (line ~ /^[ \t]*#/) continue
             split(line, kv, ":")
             key = tolower(kv[1]); value = substr(line, length(kv[1]) + 2)
             if (key == "types") types = value
             else if (key == "uris") uris = value
             else if (key == "suites") suites = value
             else if (key == "enabled") enabled = value
           }
           if (types !~ /(^|[ \t])deb([ \t]|$)/ || enabled ~ /no/) next
           nu = split(uris, u, /[ \t]+/); ns = split(suites, s, /[ \t]+/)
           for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++)
             if (u[i] != "" && s[j] != "") print u[i], s[j]
         }' "$f"
  done
  shopt -u nullglob
}

# Builds debian:bookworm-slim from the Debian archive: a minbase debootstrap,
# slimmed as Debian's own slim images are (no documentation, manual pages or
# translations, now or in later installs), its apt pointed at the same
# sources as the host's, committed as localhost/debian:bookworm-slim.
build_base() {
  local sources mirror mnt
  sources="$(apt_sources | awk '$2 ~ /^bookworm(-updates|-security)?$/' | sort -u)"
  mirror="$(awk '$2 == "bookworm" { print $1; exit }' <<<"$sources")"
  if [ -z "$mirror" ]; then
    echo "[image] cannot find a Debian bookworm source in the host's apt configuration" >&2
    exit 1
  fi
  # Globals, for the trap: the temporary root and the working container.
  rootfs="$(mktemp -d /var/tmp/tern-base.XXXXXX)"
  ctr=""
  # Whatever happens, both go (debootstrap may leave mounts behind).
  cleanup_base() {
    local m
    for m in proc sys dev/pts dev; do
      if mountpoint -q "$rootfs/$m" 2>/dev/null; then umount -l "$rootfs/$m" || true; fi
    done
    rm -rf --one-file-system "$rootfs" "$rootfs.log"
    if [ -n "$ctr" ]; then buildah rm "$ctr" >/dev/null 2>&1 || true; fi
  }
  trap cleanup_base EXIT

  step "debootstrap --variant=minbase bookworm (the host's Debian mirror; a few minutes)"
  # Its phases are shown; the whole log is printed only when it fails.
  local status=0
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" 2>&1 | tee "$rootfs.log" |
    { grep --line-buffered -E '^[IWE]: (Retrieving Release|Validating Packages|Resolving|Checking|Installing core|Unpacking the base|Configuring the base|Base system installed)|^[WE]: ' || true; } ||
    status=$?
  if [ "$status" -ne 0 ] || [ ! -x "$rootfs/usr/bin/apt-get" ]; then
    cat "$rootfs.log" >&2
    echo "[image] debootstrap failed" >&2
    exit 1
  fi
  done_step

  step "slimming the base and pointing its apt at the host's Debian sources"
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
# No documentation, manual pages or translations (as in Debian's slim images).
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
  cat >"$rootfs/etc/apt/apt.conf.d/slim" <<'EOF'
# Downloaded packages are deleted once installed.
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  local r="${rootfs:?}"
  find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$r"/usr/share/{man,groff,info,lintian,linda,locale}/*
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/* "$r"/var/log/*.log \
    "$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old "${r:?}"/dev/*
  rm -f "$r/etc/apt/sources.list"
  # One stanza per archive URI, with the suites the host uses from it.
  local uri
  awk '{ print $1 }' <<<"$sources" | awk '!seen[$0]++' | while read -r uri; do
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n' \
      "$uri" "$(awk -v u="$uri" '$1 == u { printf "%s%s", sep, $2; sep = " " }' <<<"$sources")"
  done >"$r/etc/apt/sources.list.d/debian.sources"
  : >"$rootfs/etc/machine-id"
  done_step

  step "storing it as localhost/$base"
  ctr="$(buildah from scratch)"
  mnt="$(buildah mount "$ctr")"
  cp -a "$rootfs/." "$mnt/"
  buildah umount "$ctr" >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd '["bash"]' --created-by "debootstrap --variant=minbase bookworm" "$ctr"
  buildah commit --quiet --rm "$ctr" "localhost/$base" >/dev/null
  ctr=""
  done_step
  cleanup_base
  trap - EXIT
}

if buildah inspect --type image "$base" >/dev/null 2>&1; then
  echo "[image] base $base: in local storage"
else
  build_base
fi

# --- 3. the image --------------------------------------------------------------
ccache_dir="${TERN_CCACHE_DIR:-}"
if [ -z "$ccache_dir" ] && command -v ccache >/dev/null 2>&1; then
  ccache_dir="$(ccache --get-config cache_dir 2>/dev/null || true)"
fi
ccache_dir="${ccache_dir:-$HOME/.cache/ccache}"
mkdir -p "$ccache_dir"

volumes=(-v "$ccache_dir:/ccache")
# Certificates the host trusts locally (Debian's place for them), e.g. those
# of a TLS-inspecting proxy, so the npm download works wherever it does here.
ca_dir="/usr/local/share/ca-certificates"
if compgen -G "$ca_dir/*.crt" >/dev/null; then
  volumes+=(-v "$ca_dir:$ca_dir:ro")
fi

# The commit tern_build_info reports (the build context has no .git).
commit="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
step "building $image:$version from $commit (deploy/Containerfile; ccache: $ccache_dir)"
nice -n "${TERN_IMAGE_NICE:-10}" buildah bud --isolation chroot --layers --pull=never \
  -f deploy/Containerfile "${volumes[@]}" \
  --build-arg "TERN_VERSION=$version" --build-arg "TERN_COMMIT=$commit" \
  -t "$image:$version" -t "$image:latest" .
done_step

# awk reads every line (one per tag): `head -n1` could exit before buildah
# wrote the second and kill it with SIGPIPE, failing the script (pipefail).
size="$(buildah images --format '{{.Size}}' "$image:$version" | awk 'NR == 1')"
echo "[image] $image:$version (also $image:latest): $size, built in $((SECONDS - start_all)) s"
