"""Architecture specs shipped with srblocks (YAML); see srblocks.spec for the format."""
