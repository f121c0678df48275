"""The line's record: every decision of the service kept and traceable (:mod:`~mieruka.record.store`), exported
(:mod:`~mieruka.record.query`), flagged when more is learnt later (:mod:`~mieruka.record.flags`) and watched for
drift (:mod:`~mieruka.record.monitor`)."""

FLAG_KINDS = ("escape", "overkill")
"""What a flag says of a decision (defined here, without the database packages, for the command line)."""
