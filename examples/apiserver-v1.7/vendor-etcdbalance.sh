#!/bin/sh
# Copies the packages the 1.7 patches import into a Kubernetes 1.7 tree's
# vendor/: picker, v2compat and legacy/v3balancer, non-test files only, and
# the licence. Usage: vendor-etcdbalance.sh /path/to/kubernetes
set -eu
tree=${1:?usage: $0 /path/to/kubernetes-1.7-tree}
src=$(cd "$(dirname "$0")/../.." && pwd)
dst=$tree/vendor/github.com/etcdbalance/etcdbalance-go
[ -d "$tree/vendor" ] || { echo "$tree has no vendor/ directory" >&2; exit 1; }
for pkg in picker v2compat legacy/v3balancer; do
	rm -rf "$dst/$pkg"
	mkdir -p "$dst/$pkg"
	for f in "$src/$pkg"/*.go; do
		case $f in *_test.go) continue ;; esac
		cp "$f" "$dst/$pkg/"
	done
done
cp "$src/LICENSE" "$dst/LICENSE"
echo "copied picker, v2compat and legacy/v3balancer into $dst"
