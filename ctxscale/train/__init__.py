"""Training loops, one per experiment. None of them imports Ray: each takes a trial description
and a `report(metrics, checkpoint_dir=None)` callable, so the same loop runs alone, in a plain
Ray Tune trial or under Ray Train DDP. `ctxscale.experiments` says which loop an experiment runs."""
