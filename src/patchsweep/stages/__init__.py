"""One module per DVC stage: a plain ``run(...)`` function the thin ``stages/`` scripts call."""
