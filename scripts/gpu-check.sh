#!/usr/bin/env bash
# On a GPU machine (the device tool's `run`, carry: [".gl", ".gpu-bin", ".gpu-data"]):
# unpacks the Vulkan loader, checks each carried wgpu variant against the CPU
# (`mitoscope check-device`), and times detection on the carried HPFs with every variant that
# passed, on the GPU and on the CPU. Results land in $OUT (check-*.json, detect-*.log).
#
# Prepare here, once:
#   bash scripts/build-gpu-binaries.sh plain fusion    # .gpu-bin/ (keep the tree under 64 MiB)
#   mkdir -p .gpu-data && cp ../shared/data/icpr2012/hpf/*.jpg .gpu-data/   # 5 HPFs, ~4 MB
#   Vulkan loader debs into .gl/: see /work/.library/device/README.md ("bring the loaders").
# Not yet run on a GPU: no session has been lent one so far.
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
for f in .gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
ldconfig
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
# At most 8 files come back: check-<variant>.json, summary.log, two detections CSVs.
LOG="$OUT/summary.log"
nvidia-smi -L > "$LOG" 2>&1
passed=()
mkdir -p /tmp/gpu-bin
for gz in .gpu-bin/mitoscope-*.gz; do
  v=${gz##*/mitoscope-}; v=${v%.gz}
  bin=/tmp/gpu-bin/mitoscope-$v
  gunzip -c "$gz" > "$bin" && chmod +x "$bin"
  # The first step compiles the kernels (minutes on a cold machine).
  timeout 240 "$bin" check-device --device wgpu --json > "$OUT/check-$v.json" 2>> "$LOG"
  rc=$?
  echo "== $v: check-device exit $rc" >> "$LOG"
  [ "$rc" = 0 ] && passed+=("$v")
done
echo "passed: ${passed[*]:-none}" >> "$LOG"
# The first variant that passed (build order: plain, fusion, autotune) times detection on
# the GPU and the CPU; compare the two detections CSVs (same model, same inputs).
for v in "${passed[@]:0:1}"; do
  for device in wgpu cpu; do
    echo "== detect $v on $device" >> "$LOG"
    /usr/bin/time -v timeout 180 "/tmp/gpu-bin/mitoscope-$v" detect .gpu-data --out "/tmp/det-$device" \
      --mpp 0.2456 --device "$device" >> "$LOG" 2>&1
    cp "/tmp/det-$device/detections.csv" "$OUT/detections-$device.csv" 2>> "$LOG"
  done
done
cat "$LOG"
