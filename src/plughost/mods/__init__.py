"""Built-in mods, loaded by path: ``plughost.mods.shared_cache``, ``plughost.mods.shared_artifact``.

Each is loaded under its own namespace like any mod; this package is only
where their files live.
"""
