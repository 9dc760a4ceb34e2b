"""The site file: its model, its JSON Schema checks, profiles and quantities."""
