"""Data: where images, labels and defect regions come from, and how pixels reach the model.

``sources`` (one class per on-disk layout) → ``dataset`` (samples with verdicts and splits) → ``store`` (decoded,
resized pixels); ``images`` and ``annotations`` read single files; ``synth`` writes the built-in example.
See docs/architecture.md.
"""
