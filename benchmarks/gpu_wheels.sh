#!/usr/bin/env bash
# Fetch what benchmarks/gpu_suite.py needs on the GPU machine and does not find there, into .gpu/ (git-ignored;
# carry it with the working tree): wheels for Python 3.12 on x86-64 (Optuna and its pure-Python needs; fvcore and
# its needs, built here as pure-Python wheels since fvcore publishes none) and the CIFAR-10 archive with its
# builder from ../shared/data. About 26 MB, under the 64 MiB a device call carries.
#
#   bash benchmarks/gpu_wheels.sh            # then see benchmarks/gpu_suite.py's docstring for the device command
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.gpu
shared=${CVT_NAS_SHARED:-../shared}/data/cifar10
rm -rf "$dest/wheels"
mkdir -p "$dest/wheels" "$dest/data"
# The versions the CPU machine's constraints resolve to, so both machines run the same code.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dest/wheels" optuna==5.0.0 alembic==1.20.1 sqlalchemy==2.1.9 colorlog==6.12.0 mako==1.4.3
python3 -m pip wheel -q --no-deps -w "$dest/wheels" fvcore==0.1.5.post20221221 iopath==0.1.10 yacs==0.1.8 \
    termcolor==3.3.0
if [ -f "$shared/cifar10-jpeg.tar.gz" ]; then
    cp "$shared/cifar10-jpeg.tar.gz" "$shared/build.py" "$dest/data/"
    cp -r "$shared/original_headers" "$dest/data/"
else
    echo "warning: $shared/cifar10-jpeg.tar.gz not found: the suite's CIFAR-10 parts will be skipped" >&2
fi
du -sh "$dest"
