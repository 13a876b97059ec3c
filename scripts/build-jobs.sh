#!/usr/bin/env bash
# Prints how many compile jobs this machine can run: one per core, but no more than one
# per 1.5 GB of available memory (a LibTorch translation unit takes ~1.2 GB).
cores=$(nproc)
mem_kb=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
by_mem=$(( mem_kb / 1500000 ))
[ "$by_mem" -lt 1 ] && by_mem=1
echo $(( cores < by_mem ? cores : by_mem ))
