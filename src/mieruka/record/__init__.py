"""The line's record: every decision of the service kept and traceable (:mod:`~mieruka.record.store`), exported
(:mod:`~mieruka.record.query`) and watched for drift (:mod:`~mieruka.record.monitor`)."""
