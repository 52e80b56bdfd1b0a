"""Helpers with no CALR logic: ``atomic`` (crash-safe writes), ``dist`` (DDP broadcast, gather,
unwrap) and ``cli`` (the tools' parser of flags and KEY VALUE overrides)."""
