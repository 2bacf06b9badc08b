"""Preparing data before training: shards from audio manifests, codecs, speaker vectors, the demo
corpus and persona folders (`qinyu-lit data ...`, `demo-data`, `persona-data`). Imports only ``data``."""
