"""train stage: data preparation and the GAN training loop of the generator.

``prepare`` (image folders -> aligned face shards), ``dataset`` (shard reader), ``losses``,
``loop`` (``Trainer``, ``train``), ``checkpoint`` (file format and hashes), ``report`` (loss
curves, sample grids) and ``cli`` (the ``streamanon train prepare|run`` commands).
``emotion`` trains the emotion classifier used by the metrics. Submodules load on use.
"""
