"""patchsweep."""
