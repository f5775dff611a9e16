"""Target recipes (data). Installed as the package `exporter.targets`; see exporter/recipes.py."""
