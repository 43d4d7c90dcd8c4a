#!/bin/sh
# Managed by outpost: makes sure the image a service runs exists in this user's podman storage.
#
#   image.sh pull  IMAGE:TAG
#       pull IMAGE:TAG unless it is already stored (a bad tag fails here, before any replica
#       is restarted).
#   image.sh build IMAGE:TAG INPUTS FILES_DIR [HOST_PATH...]
#       assemble a root filesystem from HOST_PATHs (copied with `tar -h`, plus every shared
#       library `ldd` lists for the executables and libraries among them) and the tree in
#       FILES_DIR (the repository files outpost shipped, laid out at their image paths), and
#       `podman import` it as IMAGE:TAG labelled outpost.inputs=INPUTS. Skipped when IMAGE:TAG
#       already exists with the same INPUTS, so running it again changes nothing.
#
# POSIX sh; idempotent; every failure exits non-zero with one line on stderr.
set -eu

die() { printf 'image.sh: %s\n' "$*" >&2; exit 1; }

[ $# -ge 2 ] || die "usage: image.sh pull IMAGE:TAG | build IMAGE:TAG INPUTS FILES_DIR [HOST_PATH...]"
mode=$1 ref=$2
shift 2
case $ref in
    *:) die "no tag in '$ref' (is TAG= set in the service's env file?)" ;;
esac

if [ "$mode" = pull ]; then
    if podman image exists "$ref"; then
        echo "image.sh: $ref is present"
        exit 0
    fi
    podman pull --quiet "$ref" >/dev/null || die "cannot pull $ref"
    echo "image.sh: pulled $ref"
    exit 0
fi

[ "$mode" = build ] && [ $# -ge 2 ] || die "usage: image.sh build IMAGE:TAG INPUTS FILES_DIR [HOST_PATH...]"
inputs=$1 files=$2
shift 2

if podman image exists "$ref"; then
    have=$(podman image inspect --format '{{ index .Config.Labels "outpost.inputs" }}' "$ref" 2>/dev/null || true)
    if [ "$have" = "$inputs" ]; then
        echo "image.sh: $ref is up to date"
        exit 0
    fi
fi

work=$(mktemp -d "${TMPDIR:-/var/tmp}/outpost-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM
: >"$work/paths"
for path in "$@"; do
    [ -e "$path" ] || die "host path $path does not exist"
    printf '%s\n' "$path" >>"$work/paths"
    # the shared libraries of every executable and library below path (ld.so included)
    find -H "$path" -type f \( -perm -u+x -o -name '*.so' -o -name '*.so.*' \) -exec ldd {} + 2>/dev/null |
        awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $1 !~ /:$/ { print $1 }' >>"$work/paths" || true
done
sed 's|^/||' "$work/paths" | sort -u >"$work/relative"
tar -C / --create --dereference --file "$work/rootfs.tar" --owner=0 --group=0 --numeric-owner \
    --files-from "$work/relative" || die "cannot archive the host paths"
if [ -d "$files" ]; then
    (cd "$files" && find . -mindepth 1 | sort) >"$work/files"
    tar -C "$files" --append --file "$work/rootfs.tar" --owner=0 --group=0 --numeric-owner \
        --no-recursion --files-from "$work/files" || die "cannot add the repository files"
fi
podman import --quiet --change "LABEL=outpost.inputs=$inputs" "$work/rootfs.tar" "$ref" >/dev/null ||
    die "podman import of $ref failed"
echo "image.sh: built $ref"
