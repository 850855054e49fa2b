"""The commands' work and the paper's experiments as presets.

- `commands`: meta-train (and resume) and evaluate, given their configs, with their run
  directories and records; `reproduce` strings the same steps together;
- `reproduce`: the quadratic and MNIST experiments of Andrychowicz et al. (2016) as presets;
- `mnist`: the five MNIST experiments and their combined report.
"""
