"""Stand-in `torchvision.ops` (see the package doc)."""
