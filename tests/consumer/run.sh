#!/usr/bin/env bash
# install_and_consume: install the build tree into a fresh prefix, build an outside project
# against it with find_package(diffuse), and run it.
# usage: run.sh BUILD_DIR CONSUMER_SRC WORK_DIR CMAKE [EXTRA_PREFIX_PATH]
set -euo pipefail
build=$1 src=$2 work=$3 cmake=$4 extra=${5:-}
rm -rf "$work"
mkdir -p "$work"
"$cmake" --install "$build" --prefix "$work/prefix" > "$work/install.log"
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
"$cmake" -S "$src" -B "$work/build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
  "-DCMAKE_PREFIX_PATH=$work/prefix${extra:+;$extra}" > "$work/configure.log"
"$cmake" --build "$work/build" > "$work/build.log"
"$work/build/consumer" "$work/prefix"
