"""The live cluster model: requirements, placement, the list+watch edge, the hub's view."""
