#!/usr/bin/env bash
# One device session for mixed precision and tensor cores (after pack.sh, as
# run.sh): the f16 and cooperative-matrix kernel tests on the real driver,
# the three convolution passes per shape in f32 and f16 (TFLOP/s), the
# models in f32 and mixed precision with their default convolutions (mixed:
# tensor cores where `unravel info` says they passed their check) and with
# `--conv-algo tiled` (no tensor cores), and PyTorch with and without
# autocast on the same card. Writes info.txt, tests.txt, kernels.txt, model.txt, torch.txt
# and failures.log to $OUT.
source crates/unravel-dev/gpu/setup.sh

stamp tests
# The f16 kernels, the loss scaler, and the tensor-core convolution (an
# ignored test elsewhere: it needs EXPERIMENTAL_COOPERATIVE_MATRIX).
for t in "$B/t_unravel_device f16" "$B/t_unravel_device cooperative --include-ignored" \
         "$B/t_unravel_device coop_check" "$B/t_linear --include-ignored" \
         "$B/t_loss_scale" "$B/t_executor mixed" "$B/t_executor scale"; do
  echo "--- $t" | tee -a $OUT/tests.txt
  timeout 90 $t --test-threads 8 >$OUT/t.log 2>&1; rc=$?
  grep -E "^test |^test result|panicked" $OUT/t.log | head -12 | tee -a $OUT/tests.txt
  [ $rc != 0 ] && cat $OUT/t.log >>$OUT/failures.log
done

stamp kernel bench
for algo in default coop-matrix; do
  for prec in "" "--f16"; do
    sel="--conv-algo $algo"; [ $algo = default ] && sel=""
    timeout 90 $B/kernels_bench $sel $prec --repeat 50 --batch 256 2>&1 | grep -E "adapter|conv" | tee -a $OUT/kernels.txt
  done
done

stamp model bench
for algo in default tiled; do
  for prec in f32 mixed; do
    for args in "--model resnet20 --batch-size 64" "--model resnet20 --batch-size 256" "--model resnet56 --batch-size 128"; do
      sel="--conv-algo $algo"; [ $algo = default ] && sel=""
      echo "--- $algo $prec $args" | tee -a $OUT/model.txt
      timeout 100 $B/unravel bench $args $sel --precision $prec --steps 20 2>&1 | tail -5 | tee -a $OUT/model.txt
    done
  done
done

stamp pytorch
python3 crates/unravel-dev/gpu/torch_resnet20.py 64 256 2>&1 | tee $OUT/torch.txt
stamp done
