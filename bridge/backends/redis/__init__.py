"""The Redis side of the bridge: its Lua scripts, one file each (:mod:`.scripts`)."""
