#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for shardfit: installs the Debian packages it needs and builds it (Release)
# into build/. Safe to run again: apt-get skips what is installed and the build is incremental.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake libopenmpi-dev openmpi-bin libdnnl-dev libprotobuf-dev protobuf-compiler
          libgtest-dev libfmt-dev zlib1g-dev python3 python3-numpy python3-protobuf python3-pandas
          dataset-fashion-mnist  # examples/fashion_mnist and its test: gzip IDX under /usr/share/datasets
          iproute2 util-linux  # ip netns and unshare: the namespace hosts of launch/cluster/netns.sh
          slurmd slurmctld slurm-client)  # the SLURM tests' daemons (tests/slurm, launch/cluster/slurm.sh)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)"
