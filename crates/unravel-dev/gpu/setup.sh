# The device machine's environment for the carried binaries (sourced by
# run.sh and run_mixed.sh): the Vulkan loader and libraries from .gl/ and
# .gpu/debs/, the binaries unpacked into .gpu/bin ($B), NVIDIA's Vulkan
# driver where it is not registered; then `unravel info` into $OUT.
set -u
T0=$(date +%s)
stamp() { echo "=== [$(( $(date +%s) - T0 ))s] $*"; }
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
mkdir -p /tmp/libs && for f in .gpu/debs/*.deb; do dpkg -x "$f" /tmp/libs; done
(cd .gpu && tar xJf bin.tar.xz)
B=.gpu/bin
if ldd $B/unravel | grep -q "not found"; then
  export LD_LIBRARY_PATH=/tmp/libs/usr/lib/x86_64-linux-gnu
fi
ldd $B/unravel | grep "not found"
ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$ICD" ] && ! ls /usr/share/vulkan/icd.d/nvidia* >/dev/null 2>&1 && export VK_DRIVER_FILES=$ICD
export XDG_CACHE_HOME=/tmp/cache
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv
stamp info
$B/unravel info 2>&1 | tee $OUT/info.txt
