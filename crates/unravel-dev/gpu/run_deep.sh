#!/usr/bin/env bash
# One device session for the papers' claims at depth (docs/reproductions.md),
# after pack.sh as run.sh: trains the deep networks back to back on the
# whole of Fashion-MNIST (same seed and schedule for every pair) and returns
# each run folder without its optimiser state as $OUT/<run>.tar.xz (at most
# 8 files come back), to be analysed on any machine with `unravel lesion`
# and `unravel paths --gradient`. EPOCHS (default 4) sets each run's length;
# no run starts after BUDGET seconds (default 480), so the call ends inside
# its limit; a run cut by its own timeout keeps its last finished epoch.
source crates/unravel-dev/gpu/setup.sh
EPOCHS=${EPOCHS:-4}
BUDGET=${BUDGET:-480}
mkdir -p /tmp/runs
train() {
  local name=$1; shift
  if [ $(( $(date +%s) - T0 )) -gt "$BUDGET" ]; then echo "skipped $name (time)" | tee -a $OUT/train.txt; return; fi
  stamp "train $name"
  echo "--- $name: $*" >> $OUT/train.txt
  timeout 150 $B/unravel train --epochs "$EPOCHS" --batch-size 128 --seed 0 \
    --data-dir .gpu/fashion --out /tmp/runs/$name --quiet "$@" 2>&1 | tail -2 | tee -a $OUT/train.txt
  tar cJf $OUT/$name.tar.xz -C /tmp/runs --exclude='optimizer.safetensors' $name
}
# Rows 1, 2, 4 and 5: the deep network, its plain twin, stochastic depth.
train resnet110 --model resnet110
train plain110 --model plain110
train resnet110-sd --model resnet110 --stochastic-depth 0.5
# Row 6: identity against highway shortcuts; row 7: original against
# pre-activation blocks (resnet110 above is the original).
train resnet56 --model resnet56
train highway56 --model resnet56 --shortcut highway
train preact110 --model preact-resnet110
stamp done
