"""Learned-optimizer architectures, each a pure init and step, and the file format of a trained one.

- `lstm`: the coordinatewise LSTM of Andrychowicz et al. (2016): its config, meta-parameters,
  state and the paper's step (`reference_step`);
- `lstm_fast`: the same step computed fast (`lstm_step`), which everything else calls;
- `mlp`: the per-parameter MLP over normalized features (`mlp_step`), the architecture of `general`;
- `features`: what an optimizer sees of each coordinate (gradients, moving averages, encodings);
- `files`: learned-optimizer files, read from either a file or a training checkpoint.
"""
