"""Configs: defaults -> preset -> tuned overlay -> overrides, the kind table (kind -> schema), and the presets."""
