"""The audit: does each heatmap fall on the defect, off it, or break into pieces, and which images deserve a look?

``localization`` and ``faithfulness`` (metrics of one map) → ``triage`` (a category per image, the review list) →
``summary`` (means beside chance baselines) → ``report`` and ``panels`` (the HTML report) ; ``run`` is the command.
See docs/architecture.md.
"""
