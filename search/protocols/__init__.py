"""Named training protocols shipped with srblocks (YAML); see srblocks.protocols for the format."""
