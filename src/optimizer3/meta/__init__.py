"""Meta-training: learning a learned optimizer's meta-parameters on a task family.

- `config`: `MetaTrainConfig`, the experiment (task, architecture, meta-training settings), and
  `PESTrainConfig`, PES meta-training of the per-parameter MLP on a task mix;
- `unroll`: the learned optimizer training a batch of optimizees, differentiably;
- `truncated_bptt`: the meta-gradient estimator (truncated backpropagation through time);
- `pes`: the other estimator, persistent evolution strategies (forward passes only, long horizons);
- `pes_trainer`: PES meta-training on a mix of the benchmark's meta-training tasks;
- `trainer`: trajectories, meta-steps, validation and early stopping, signals, skips;
- `run_state` and `checkpoint`: what a run is between trajectories, saved and resumed exactly;
- `distributed`: data-parallel meta-training over processes (--workers, torchrun);
- `export`: a run's best optimizer as a pretrained optimizer with its card.
"""
