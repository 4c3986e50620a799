#!/usr/bin/env bash
# Reproduces the committed benchmark results, in order: throughput, the per-step signal
# diagnostic, the sweep (learning rate and clip range, the same effort for every algorithm),
# PXPO's advantage options at PXPO's swept settings, then the full suite with each
# algorithm's swept settings; the training options (KL, group advantages); PXPO's credits and the
# region task (agents.credit, benchmarks.credit_signal); the refine page's effect
# per K and its screenshot; 1 vs 2 processes. Then SB3 PPO in residual mode at two action grids.
# About 6 hours on 2 CPU cores. Logs go to logs/
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
PY=${PY:-.venv/bin/python}
R=benchmarks/results  # the committed results: every command is told to write there
mkdir -p logs
$PY -m benchmarks.throughput --out $R/throughput.json > logs/throughput.log 2>&1
$PY -m benchmarks.step_signal --latent --out $R/step_signal.json > logs/step_signal.log 2>&1
$PY -m benchmarks.credit_signal --out $R/credit_signal.json > logs/credit_signal.log 2>&1
$PY -m benchmarks.suite sweep --out $R/sweep > logs/sweep.log 2>&1
best=$R/sweep/best_learning_rates.json
setting() { $PY -c "import json; print(json.load(open('$best'))['$1']['$2'])"; }
DDPO=(--ddpo-learning-rates "$(setting ddpo learning_rate)" --ddpo-clip-ranges "$(setting ddpo clip_range)")
PXPO=(--pxpo-learning-rates "$(setting pxpo learning_rate)" --pxpo-clip-ranges "$(setting pxpo clip_range)")
ORACLE=(--oracle-learning-rates "$(setting oracle learning_rate)")
echo "swept settings: ${DDPO[*]} ${PXPO[*]} ${ORACLE[*]}"
$PY -m benchmarks.suite advantages "${PXPO[@]}" --out $R/advantages > logs/advantages.log 2>&1
$PY -m benchmarks.suite full "${DDPO[@]}" "${PXPO[@]}" "${ORACLE[@]}" --out $R/full > logs/full.log 2>&1
$PY -m benchmarks.suite options --out $R/options > logs/options.log 2>&1
# (benchmarks/results/credit/ is the credit preset of 745fc42, which compared hybrid-nosilent, pixel-silent and
# footprint-silent; today's preset compares the default 'auto' with per-pixel, image and footprint credit.)
$PY -m benchmarks.suite credit --out $R/credit_auto > logs/credit_auto.log 2>&1
$PY -m benchmarks.suite region --out $R/region > logs/region.log 2>&1
# PXPO's silent modes (issue 18): which pixels each reward never looks at, the region task at the default
# and with every silent pixel held, segmentation with every silent pixel held, the brake's strength there,
# the hybrid and receptive credits, a higher learning rate, and the default brake (5) on segmentation, DDIM and flow.
$PY -m benchmarks.unscored --out $R/unscored.json > logs/unscored.log 2>&1
$PY -m benchmarks.hold_cost --repeats 9 --out $R/hold_cost.json > logs/hold_cost.log 2>&1
$PY -m benchmarks.suite full --tasks region --algos pxpo --out $R/full_pxpo_hold > logs/full_pxpo_hold.log 2>&1
$PY -m benchmarks.suite region --algos pxpo --pxpo-variants default hold10 hold3 hold1 --seeds 0 1 --out $R/region_hold > logs/region_hold.log 2>&1
SEG=(full --tasks segmentation --algos pxpo --seeds 0 1)
$PY -m benchmarks.suite "${SEG[@]}" --pxpo-variants hold0 hold10 --out $R/segmentation_hold > logs/segmentation_hold.log 2>&1
$PY -m benchmarks.suite "${SEG[@]}" --pxpo-variants silent3 silent1 --out $R/segmentation_penalty > logs/segmentation_penalty.log 2>&1
# (hybrid10 and receptive10 are the arms that ran as 'hybrid' and 'receptive-silent' while the penalty's
# default was 10; the segmentation_lr arm is the default at 3e-4.)
$PY -m benchmarks.suite "${SEG[@]}" --pxpo-variants hybrid10 --out $R/segmentation_hybrid > logs/segmentation_hybrid.log 2>&1
$PY -m benchmarks.suite "${SEG[@]}" --pxpo-variants receptive3 hybrid3 receptive10 --out $R/segmentation_cross > logs/segmentation_cross.log 2>&1
# Per-pixel credit with the brake at 5 (the default before 'auto', which picks image credit on segmentation):
$PY -m benchmarks.suite "${SEG[@]}" --pxpo-variants silent5 --pxpo-learning-rates 0.0003 --out $R/segmentation_lr > logs/segmentation_lr.log 2>&1
$PY -m benchmarks.suite full --tasks segmentation --algos pxpo --pxpo-variants silent5 --out $R/full_pxpo_kl5 > logs/full_pxpo_kl5.log 2>&1
$PY -m benchmarks.suite flow --tasks segmentation --algos pxpo --pxpo-variants silent5 --out $R/flow_kl5 > logs/flow_kl5.log 2>&1
# Credit chosen by the reward's locality (the default 'auto'): each task's locality, the screen that found
# image credit on segmentation, the full and flow runs at the new default, the DDPO-SF control, the windows,
# and the check that the pixel-local tasks' committed runs still reproduce.
$PY -m benchmarks.locality --out $R/locality.json > logs/locality.log 2>&1
$PY -m benchmarks.suite "${SEG[@]}" --pxpo-variants image5 image hybrid-w3 --out $R/segmentation_image > logs/segmentation_image.log 2>&1
$PY -m benchmarks.suite full --tasks segmentation jpeg --algos pxpo --out $R/full_auto > logs/full_auto.log 2>&1
$PY -m benchmarks.suite flow --tasks segmentation jpeg --algos pxpo --out $R/flow_auto > logs/flow_auto.log 2>&1
$PY -m benchmarks.curve_windows --arms ddpo=$R/full/runs/segmentation/ddpo pxpo-auto=$R/full_auto/runs/segmentation/pxpo \
    pxpo-pixel-penalty5=$R/full_pxpo_kl5/runs/segmentation/pxpo --columns reward_mean --window 8 \
    --out $R/segmentation_windows_auto.json > logs/segmentation_windows_auto.log 2>&1
$PY -m benchmarks.suite full --tasks segmentation --algos ddpo --estimator sf --ddpo-learning-rates 0.0001 --seeds 0 1 \
    --out $R/segmentation_ddpo_sf > logs/segmentation_ddpo_sf.log 2>&1
$PY -m benchmarks.credit_signal --credits auto pixel image --out $R/credit_signal_auto.json > logs/credit_signal_auto.log 2>&1
$PY -m benchmarks.reproduce --runs $R/full --tasks color target_map region --label pxpo --seeds 0 3 \
    --out $R/full_reproduce.json > logs/full_reproduce.log 2>&1
$PY -m benchmarks.reproduce --runs $R/full --tasks segmentation jpeg region --label pxpo --seeds 0 \
    --out $R/full_reproduce_auto.json > logs/full_reproduce_auto.log 2>&1
$PY -m benchmarks.refine --screenshot --out $R > logs/refine.log 2>&1
$PY -m benchmarks.distributed --out $R/distributed.json > logs/distributed.log 2>&1
$PY -m benchmarks.sb3_ppo --out $R/sb3_ppo > logs/sb3_ppo.log 2>&1
$PY -m benchmarks.sb3_ppo --action-grid 16 --out $R/sb3_ppo_grid16 > logs/sb3_ppo_grid16.log 2>&1
$PY -m benchmarks.suite breadth-candidates --out $R/breadth_candidates > logs/breadth_candidates.log 2>&1
$PY -m benchmarks.suite breadth --out $R/breadth > logs/breadth.log 2>&1
$PY -m benchmarks.suite breadth-test --tasks ramp segmentation_next --algos pxpo --out $R/breadth_guard_fix \
    > logs/breadth_guard_fix.log 2>&1
$PY -m benchmarks.suite full --tasks target_map segmentation color --algos pxpo --out $R/full_checked \
    > logs/full_checked.log 2>&1
$PY -m benchmarks.suite distill --tasks region --out $R/distill > logs/distill.log 2>&1
$PY -m benchmarks.suite distill --tasks region frame --pxpo-variants default --out $R/weights_alone \
    > logs/weights_alone.log 2>&1
$PY -m benchmarks.memory_table --out $R/memory_table > logs/memory_table.log 2>&1
$PY -m benchmarks.suite seam --tasks region --out $R/seam > logs/seam.log 2>&1
$PY -m benchmarks.suite seam --tasks frame --pxpo-variants band0 band4 --out $R/seam > logs/seam_frame.log 2>&1
# the peers: DDPO's and PXPO's test-split runs are the breadth suite's (copied into the folder first)
mkdir -p $R/peers/runs
for t in ramp blurred_dark5 frame background_white red_budget shape_left segmentation_next contrast; do
    mkdir -p $R/peers/runs/$t && cp -r $R/breadth/runs/$t/ddpo $R/breadth/runs/$t/pxpo $R/peers/runs/$t/
done
$PY -m benchmarks.suite peers --out $R/peers > logs/peers.log 2>&1
$PY -m benchmarks.suite peers-flow --out $R/peers_flow > logs/peers_flow.log 2>&1
$PY -m benchmarks.reproduce --runs $R/breadth --preset breadth --tasks frame color --label ddpo --epochs 3 \
    --out $R/reproduce_algorithms/ddpo.json > logs/reproduce_ddpo.log 2>&1
$PY -m benchmarks.reproduce --runs $R/breadth --preset breadth --tasks color target_map --label oracle \
    --epochs 3 --out $R/reproduce_algorithms/oracle.json > logs/reproduce_oracle.log 2>&1
for b in band0 band4; do
    $PY -m benchmarks.reproduce --runs $R/seam --preset seam --tasks region frame --label pxpo-$b --epochs 6 \
        --out $R/reproduce_algorithms/pxpo-$b.json > logs/reproduce_$b.log 2>&1
done
# issue 35: fewer passes (held out every epoch); the test split last, run once
for p in passes-train passes-ddpo passes-reuse passes-test; do
    d=${p//-/_}
    $PY -m benchmarks.suite $p --out $R/$d > logs/$d.log 2>&1
    $PY -m benchmarks.passes $p --out $R/$d >> logs/$d.log 2>&1
done
# the cost per pass before and after (a worktree at 79caf47 for 'before'), and trl 0.23.1 in its own venv
$PY -m benchmarks.throughput --out $R/throughput_passes/after.json > logs/throughput_passes.log 2>&1
bash benchmarks/trl_venv.sh /tmp/venv-trl > logs/trl_venv.log 2>&1
$PY -m benchmarks.trl_compare --trl-python /tmp/venv-trl/bin/python --out $R/trl_compare --epochs 15 \
    --ours-option step_window=2 --ours-option window_placement=random --ours-option window_outside=deterministic \
    > logs/trl_compare.log 2>&1
echo done
