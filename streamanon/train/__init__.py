"""train stage: data preparation, the generators' training and their validation.

``prepare`` (image folders -> aligned face shards), ``dataset`` (shard reader), ``losses``,
``loop`` (``Trainer``, ``train``: the U-Net GAN), ``appearance`` (fit of the appearance
generator), ``validate`` (acceptance figures on held-out faces), ``card`` (model card),
``checkpoint`` (file format and hashes), ``report`` (loss curves, sample grids) and ``cli`` (the
``streamanon train prepare|run|appearance|validate|card`` commands).
``emotion`` trains the emotion classifier used by the metrics. Submodules load on use.
"""
