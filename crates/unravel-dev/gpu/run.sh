#!/usr/bin/env bash
# One device session: Vulkan loader, Unravel's test binaries, kernel and model
# benchmarks on the real GPU, and PyTorch's ResNet-20 on the same card.
source crates/unravel-dev/gpu/setup.sh

run_tests() {
  for t in "$@"; do
    [ -x "$t" ] || continue
    [ $(( $(date +%s) - T0 )) -gt 470 ] && { echo "skipped $t (time)"; continue; }
    echo "--- $t"
    timeout 60 $t --test-threads 8 >$OUT/t.log 2>&1
    rc=$?
    grep -E "^test result|FAILED|panicked" $OUT/t.log | head -8
    [ $rc != 0 ] && { echo "rc=$rc"; cat $OUT/t.log >>$OUT/failures.log; }
    rm -f "$t"
  done
  rm -f $OUT/t.log
}
stamp tests first
run_tests $B/t_unravel_device $B/t_conv2d $B/t_batchnorm $B/t_pool $B/t_executor $B/t_model_gradients
stamp kernel bench
for algo in tiled subgroup; do
  for n in 64 256; do
    timeout 90 $B/kernels_bench --conv-algo $algo --repeat 50 --batch $n 2>&1 | grep -E "adapter|sgemm|conv" | tee -a $OUT/kernels.txt
  done
done

stamp model bench
for algo in default tiled subgroup; do
  for args in "--model resnet20 --batch-size 64" "--model resnet20 --batch-size 256" "--model resnet56 --batch-size 128"; do
    echo "--- $algo $args"
    sel="--conv-algo $algo"; [ $algo = default ] && sel=""
    timeout 120 $B/unravel bench $args $sel --steps 20 2>&1 | tail -4 | tee -a $OUT/model.txt
  done
done
for args in "--model densenet-bc100-k12 --batch-size 64" "--model resnet20 --batch-size 256 --unfused" "--model resnext29-8x64d --batch-size 32"; do
  echo "--- $args"
  timeout 120 $B/unravel bench $args --steps 20 2>&1 | tail -4 | tee -a $OUT/model.txt
done

stamp train one epoch
timeout 100 $B/unravel train --epochs 1 --batch-size 128 --data-dir .gpu/fashion --out /tmp/run 2>&1 | grep -v Fontconfig | grep -E "epoch   1|warning|error" | tee -a $OUT/train.txt
stamp other tests
run_tests $B/t_*
stamp done
