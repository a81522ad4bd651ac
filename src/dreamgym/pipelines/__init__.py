"""One thin function per command: config -> objects -> work -> summary.json (docs/contracts)."""
